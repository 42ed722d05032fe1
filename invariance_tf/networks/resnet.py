"""The paper's CIFAR ResNet: widths 16-16-32-64, `n` pre-activation blocks per stage, depth 6n+2.

Follows the reference code (MadryLab's CIFAR ResNet, used by the paper):
per-image standardisation of the raw input, leaky ReLU (slope 0.1),
parameter-free shortcuts (average pooling and zero-padded channels).
n = 5 is the paper's ResNet-32; n = 1 (ResNet-8) is the fast CPU variant;
n = 7 is ResNet-44.
"""

from __future__ import annotations

import math

import keras

from invariance_tf.layers import PerImageStandardization, ZeroPadChannels
from invariance_tf.networks.regularizers import weight_decay_regularizer

WIDTHS = (16, 16, 32, 64)


def _conv_initializer(filters: int, reference: bool) -> keras.initializers.Initializer | str:
    """The reference code's N(0, sqrt(2 / (9 * filters))) for 3x3 kernels, or Keras' default."""
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / (9 * filters))) if reference else "glorot_uniform"


def _bn_relu(x: keras.KerasTensor, name: str, reference: bool) -> keras.KerasTensor:
    epsilon = 1e-3 if reference else 1e-5
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=epsilon, name=f"{name}_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=0.1, name=f"{name}_relu")(x)


def _block(
    x: keras.KerasTensor,
    filters: int,
    stride: int,
    reg: keras.regularizers.Regularizer | None,
    name: str,
    reference: bool,
    activate_before_residual: bool = False,
) -> keras.KerasTensor:
    """A pre-activation block; with `activate_before_residual` the shortcut starts after the first BN-ReLU."""
    shortcut = x
    x = _bn_relu(x, f"{name}_pre", reference)
    if activate_before_residual:
        shortcut = x
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        kernel_initializer=_conv_initializer(filters, reference),
        name=f"{name}_conv1",
    )(x)
    x = _bn_relu(x, f"{name}_mid", reference)
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        kernel_initializer=_conv_initializer(filters, reference),
        name=f"{name}_conv2",
    )(x)
    if stride != 1:
        shortcut = keras.layers.AveragePooling2D(stride, stride, padding="valid", name=f"{name}_pool")(shortcut)
    extra = filters - shortcut.shape[-1]
    if extra:
        shortcut = ZeroPadChannels(extra, name=f"{name}_pad")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])


def resnet(
    n: int = 5,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    reference_details: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Builds ResNet-(6n+2) for raw images of `input_shape`.

    `weight_decay` is the coefficient of 1/2 ||w||^2 on every kernel (the
    paper's `tf.nn.l2_loss` convention, 2e-4 in its configs).
    `reference_details` takes the reference code's three small choices:
    conv kernels drawn from N(0, sqrt(2 / (9 * filters))) and the logits layer
    uniform in +-sqrt(3 / fan_in) (its `uniform_unit_scaling`), batch-norm
    epsilon 1e-3 (Keras' default here is 1e-5), and the first block's shortcut
    taken after its first BN-ReLU (`activate_before_residual`).
    """
    if n < 1:
        raise ValueError(f"resnet n (blocks per stage) must be >= 1; got {n}")
    reg = weight_decay_regularizer(weight_decay)
    reference = bool(reference_details)
    inputs = keras.Input(input_shape)
    x = PerImageStandardization(dtype="float32", name="standardize")(inputs)
    x = keras.layers.Conv2D(
        WIDTHS[0],
        3,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        kernel_initializer=_conv_initializer(WIDTHS[0], reference),
        name="stem",
    )(x)
    for stage, (filters, stride) in enumerate(zip(WIDTHS[1:], (1, 2, 2)), start=1):
        for block in range(n):
            x = _block(
                x,
                filters,
                stride if block == 0 else 1,
                reg,
                f"stage{stage}_block{block}",
                reference,
                activate_before_residual=reference and stage == 1 and block == 0,
            )
    x = _bn_relu(x, "head", reference)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    dense_init = (
        keras.initializers.VarianceScaling(1.0, mode="fan_in", distribution="uniform")
        if reference
        else "glorot_uniform"
    )
    outputs = keras.layers.Dense(
        num_classes, kernel_regularizer=reg, kernel_initializer=dense_init, dtype="float32", name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{6 * n + 2}")
