"""Small layers and helpers shared by the networks."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="invariance_tf")
class PerImageStandardization(keras.layers.Layer):
    """Scales each image to zero mean and unit variance, as `tf.image.per_image_standardization`.

    Puts input normalisation inside the network, so models take raw pixel
    values and the black canvas of a transform stays the value 0 of the raw image.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.image.per_image_standardization(inputs)

    def get_config(self) -> dict:
        return super().get_config()


@keras.saving.register_keras_serializable(package="invariance_tf")
class ZeroPadChannels(keras.layers.Layer):
    """Appends `extra` zero channels: the parameter-free ("option A") ResNet shortcut."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        before = self.extra // 2
        return tf.pad(inputs, [[0, 0], [0, 0], [0, 0], [before, self.extra - before]])

    def get_config(self) -> dict:
        return {**super().get_config(), "extra": self.extra}


def weight_decay_regularizer(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """The kernel regularizer adding `weight_decay` * 1/2 ||w||^2 to the loss, or None when `weight_decay` is 0.

    The factor 1/2 is the paper's `tf.nn.l2_loss` convention.

    Keras' `L2(l2)` adds l2 * sum(w^2), whose gradient is 2 * l2 * w, so l2 = `weight_decay` / 2 gives the
    SGD-style decay `weight_decay` * w.
    """
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None
