"""A narrow ResNet-9 (Page's DAWNBench network) for accuracy per CPU-minute.

Layout as in David Page, "How to train your ResNet" (2018): a 3x3 conv, then
three stages conv-BN-ReLU + 2x2 max pool, the first and last followed by a
residual pair of conv-BN-ReLU, global max pooling and a linear head whose logits are scaled by 1/8 (Page's
choice, which keeps early logits small). Widths are
`width`, 2, 4 and 8 times `width` (64 = Page's network; 16 trains CIFAR-10 to
over 80 % in minutes on 2 CPU cores). Takes raw pixel values in [0, 255];
per-image standardisation is inside the network. Logits are float32 under any
mixed-precision policy.
"""

from __future__ import annotations

import keras

from invariance_tf.layers import PerImageStandardization
from invariance_tf.networks.regularizers import weight_decay_regularizer

LOGIT_SCALE = 0.125
# (width multiple, residual pair) of the three stages after the prep layer.
STAGES = ((2, True), (4, False), (8, True))


def _conv_bn_relu(
    x: keras.KerasTensor, filters: int, reg: keras.regularizers.Regularizer | None, name: str
) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _stage(
    x: keras.KerasTensor, filters: int, residual: bool, reg: keras.regularizers.Regularizer | None, name: str
) -> keras.KerasTensor:
    x = _conv_bn_relu(x, filters, reg, name)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if not residual:
        return x
    branch = _conv_bn_relu(x, filters, reg, f"{name}_res1")
    branch = _conv_bn_relu(branch, filters, reg, f"{name}_res2")
    return keras.layers.Add(name=f"{name}_add")([x, branch])


def resnet9(
    width: int = 16,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Builds the ResNet-9 with stage widths `width` x (1, 2, 4, 8) for raw images of `input_shape`.

    `weight_decay` is the coefficient of 1/2 ||w||^2 on every kernel, as in
    the other networks.
    """
    if width < 1:
        raise ValueError(f"resnet9 width must be >= 1; got {width}")
    reg = weight_decay_regularizer(weight_decay)
    inputs = keras.Input(input_shape)
    x = PerImageStandardization(dtype="float32", name="standardize")(inputs)
    x = _conv_bn_relu(x, width, reg, "prep")
    for stage, (multiple, residual) in enumerate(STAGES, start=1):
        x = _stage(x, multiple * width, residual, reg, f"stage{stage}")
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=reg, name="dense")(x)
    outputs = keras.layers.Rescaling(LOGIT_SCALE, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet9_w{width}")
