"""A small convolutional network for tests and quick experiments."""

from __future__ import annotations

import keras

from invariance_tf.layers import PerImageStandardization
from invariance_tf.networks.regularizers import weight_decay_regularizer


def small_cnn(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width: int = 16,
    weight_decay: float = 0.0,
    name: str = "small_cnn",
) -> keras.Model:
    """Three conv layers and a linear head; no batch norm, so replicas compute identical updates.

    `weight_decay` is the coefficient of 1/2 ||w||^2 on every kernel (the
    paper's `tf.nn.l2_loss` convention).
    """
    reg = weight_decay_regularizer(weight_decay)
    inputs = keras.Input(input_shape)
    x = PerImageStandardization(dtype="float32")(inputs)
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(
            filters, 3, strides=1 if i == 0 else 2, padding="same", activation="relu", kernel_regularizer=reg
        )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
