"""G-ResNet (Cohen & Welling, 2016) on p4 or p4m, with their head or an invariant one, and its planar counterpart.

Follows the reference code (tscohen/gconv_experiments, CIFAR10/models/P4MResNet.py):
depth 6n+2 with n pre-activation blocks BN-ReLU-conv3x3-BN-ReLU-conv3x3 per
stage at 1x, 1/2x and 1/4x resolution; stride 2 in the first conv of stages 2
and 3; the shortcut is the identity, or a 1x1 stride-2 conv of the raw block
input where the width changes; the stem is a lifting 3x3 conv; every conv has
a bias and every batch norm a gamma and beta, as in the reference.

Widths are G-channels = planar width / sqrt(|G|), rounded (`matched_widths`),
which keeps the parameter count of the planar ResNet at widths 32/64/128
(2,639,434 parameters for depth 44): 16/32/64 on p4, 11/23/45 on p4m.

Heads (`HEADS`): "flatten" is the reference's: BN-ReLU, global average
pooling of every plane, and a linear layer on all C x |G| features, so logits
are not invariant to quarter-turns (upright images keep their orientation).
p4m G-ResNet44 with this head has the reference's 2,622,878 trainable
parameters (README: 2.62M). "invariant" pools over the group axis before
global average pooling, so logits are invariant to quarter-turns (and flips,
on p4m) of the input. The invariance is exact when each stride-2 stage sees an
odd side (33x33 inputs); at 32x32 TensorFlow's asymmetric 'same' padding makes
it approximate.

Takes raw pixel values in [0, 255]; per-image standardisation is inside the
network and commutes with rotations and flips.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import keras

from invariance_tf.layers import (
    GroupBatchNormalization,
    GroupPool,
    P4ConvP4,
    P4ConvZ2,
    P4MConvP4M,
    P4MConvZ2,
    PerImageStandardization,
)
from invariance_tf.layers.gconv import group_order
from invariance_tf.networks.regularizers import weight_decay_regularizer

PLANAR_WIDTHS = (32, 64, 128)
GROUP_CONVS = {"p4": (P4ConvZ2, P4ConvP4), "p4m": (P4MConvZ2, P4MConvP4M)}
HEADS = ("invariant", "flatten")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class _Family(NamedTuple):
    """Layer factories that turn one ResNet builder into a planar or a group network."""

    stem: Callable[..., keras.layers.Layer]
    conv: Callable[..., keras.layers.Layer]
    norm: Callable[..., keras.layers.Layer]
    pool: Callable[..., keras.layers.Layer] | None


def matched_widths(planar_widths: tuple[int, ...], group: str) -> tuple[int, ...]:
    """G-channels with about the parameters of planar convs of `planar_widths`: round(width / sqrt(|G|)).

    Parameters of a group-to-group conv scale as |G| C^2, so this rule keeps
    them; it gives Cohen & Welling's 11/23/45 for p4m from 32/64/128.
    """
    order = group_order(group)
    return tuple(max(1, round(width / math.sqrt(order))) for width in planar_widths)


def group_family(group: str, head: str, reg: keras.regularizers.Regularizer | None, use_bias: bool = True) -> _Family:
    """The layer factories of a G-network on `group` with `head` ("invariant" pools over the group, "flatten" not)."""
    if group not in GROUP_CONVS:
        raise ValueError(f"Unknown group {group!r}; valid groups are {sorted(GROUP_CONVS)}")
    if head not in HEADS:
        raise ValueError(f"Unknown G-network head {head!r}; valid heads are {list(HEADS)}")
    lifting, group_conv = GROUP_CONVS[group]
    return _Family(
        stem=functools.partial(lifting, use_bias=use_bias, kernel_regularizer=reg),
        conv=functools.partial(group_conv, use_bias=use_bias, kernel_regularizer=reg),
        norm=functools.partial(GroupBatchNormalization, group),
        pool=functools.partial(GroupPool, group, "max") if head == "invariant" else None,
    )


def _blocks_per_stage(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, ..., 44, ...); got {depth}")
    return (depth - 2) // 6


def _bn_relu(x: keras.KerasTensor, family: _Family, name: str) -> keras.KerasTensor:
    x = family.norm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _block(x: keras.KerasTensor, family: _Family, filters: int, strides: int, name: str) -> keras.KerasTensor:
    shortcut = x
    x = _bn_relu(x, family, f"{name}_pre")
    x = family.conv(filters, 3, strides=strides, name=f"{name}_conv1")(x)
    x = _bn_relu(x, family, f"{name}_mid")
    x = family.conv(filters, 3, name=f"{name}_conv2")(x)
    if strides != 1 or shortcut.shape[-1] != x.shape[-1]:
        shortcut = family.conv(filters, 1, strides=strides, name=f"{name}_shortcut")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])


def _resnet(
    family: _Family,
    depth: int,
    widths: tuple[int, int, int],
    input_shape: tuple[int | None, int | None, int],
    num_classes: int,
    reg: keras.regularizers.Regularizer | None,
    name: str,
) -> keras.Model:
    n = _blocks_per_stage(depth)
    inputs = keras.Input(input_shape)
    x = PerImageStandardization(dtype="float32", name="standardize")(inputs)
    x = family.stem(widths[0], 3, name="stem")(x)
    for stage, filters in enumerate(widths, start=1):
        for block in range(n):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _block(x, family, filters, strides, f"stage{stage}_block{block}")
    x = _bn_relu(x, family, "head")
    if family.pool is not None:
        x = family.pool(name="group_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def g_resnet(
    depth: int = 44,
    group: str = "p4",
    input_shape: tuple[int | None, int | None, int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    widths: tuple[int, int, int] | None = None,
    head: str = "invariant",
    name: str | None = None,
) -> keras.Model:
    """Builds G-ResNet-`depth` on `group` ("p4" or "p4m") with `head` ("invariant" or "flatten", see `HEADS`).

    `widths` are G-channels per stage (default: `matched_widths` of the planar
    32/64/128 ResNet); "invariant" takes the max over the group axis before
    global average pooling, "flatten" is Cohen & Welling's head (all C x |G|
    features reach the linear layer); `weight_decay` is the coefficient of
    1/2 ||w||^2 on every kernel.
    """
    reg = weight_decay_regularizer(weight_decay)
    family = group_family(group, head, reg)
    widths = widths or matched_widths(PLANAR_WIDTHS, group)
    return _resnet(family, depth, widths, input_shape, num_classes, reg, name or f"{group}_resnet{depth}")


def planar_counterpart(
    depth: int = 44,
    input_shape: tuple[int | None, int | None, int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    widths: tuple[int, int, int] = PLANAR_WIDTHS,
    name: str | None = None,
) -> keras.Model:
    """Builds the reference's planar (Z2) ResNet-`depth`: the G-ResNet's architecture with ordinary convs.

    At the default widths 32/64/128 this is the baseline the G-ResNet widths
    are matched to (2,639,434 parameters for depth 44).
    """
    reg = weight_decay_regularizer(weight_decay)
    conv = functools.partial(
        keras.layers.Conv2D, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg
    )
    family = _Family(stem=conv, conv=conv, norm=keras.layers.BatchNormalization, pool=None)
    return _resnet(family, depth, widths, input_shape, num_classes, reg, name or f"z2_resnet{depth}")
