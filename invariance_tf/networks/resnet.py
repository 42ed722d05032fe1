"""The paper's CIFAR ResNet: widths 16-16-32-64, `n` pre-activation blocks per stage, depth 6n+2.

Follows the reference code (MadryLab's CIFAR ResNet, used by the paper):
per-image standardisation of the raw input, leaky ReLU (slope 0.1),
parameter-free shortcuts (average pooling and zero-padded channels).
n = 5 is the paper's ResNet-32; n = 1 (ResNet-8) is the fast CPU variant;
n = 7 is ResNet-44.
"""

from __future__ import annotations

import keras

from invariance_tf.networks.layers import PerImageStandardization, ZeroPadChannels, weight_decay_regularizer

WIDTHS = (16, 16, 32, 64)


def _bn_relu(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=0.1, name=f"{name}_relu")(x)


def _block(x: keras.KerasTensor, filters: int, stride: int, reg: keras.regularizers.Regularizer | None,
           name: str) -> keras.KerasTensor:
    shortcut = x
    x = _bn_relu(x, f"{name}_pre")
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            kernel_regularizer=reg, name=f"{name}_conv1")(x)
    x = _bn_relu(x, f"{name}_mid")
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                            kernel_regularizer=reg, name=f"{name}_conv2")(x)
    if stride != 1:
        shortcut = keras.layers.AveragePooling2D(stride, stride, padding="valid",
                                                 name=f"{name}_pool")(shortcut)
    extra = filters - shortcut.shape[-1]
    if extra:
        shortcut = ZeroPadChannels(extra, name=f"{name}_pad")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])


def resnet(
    n: int = 5,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Builds ResNet-(6n+2) for raw images of `input_shape`.

    `weight_decay` is the coefficient of 1/2 ||w||^2 on every kernel (the
    paper's `tf.nn.l2_loss` convention, 2e-4 in its configs).
    """
    if n < 1:
        raise ValueError(f"resnet n (blocks per stage) must be >= 1; got {n}")
    reg = weight_decay_regularizer(weight_decay)
    inputs = keras.Input(input_shape)
    x = PerImageStandardization(dtype="float32", name="standardize")(inputs)
    x = keras.layers.Conv2D(WIDTHS[0], 3, padding="same", use_bias=False,
                            kernel_regularizer=reg, name="stem")(x)
    for stage, (filters, stride) in enumerate(zip(WIDTHS[1:], (1, 2, 2)), start=1):
        for block in range(n):
            x = _block(x, filters, stride if block == 0 else 1, reg, f"stage{stage}_block{block}")
    x = _bn_relu(x, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{6 * n + 2}")
