"""G-ResNet-9: the CPU recipe's ResNet-9 (`invariance_tf.networks.resnet9`) with p4 or p4m G-convolutions.

Same layout as ResNet-9: a lifting 3x3 conv-BN-ReLU, then three stages
G-conv-BN-ReLU + 2x2 max pool, the first and last followed by a residual pair
of G-conv-BN-ReLU, global max pooling and a linear head whose logits are
scaled by 1/8. Convs have no bias; batch norm shares its statistics over the
group axis (`GroupBatchNormalization`); max pooling acts on each plane.

G-widths are `matched_widths` of the planar widths `width` x (1, 2, 4, 8):
round(planar / sqrt(|G|)), which keeps the parameter count of ResNet-9 at the
same `width` (width 16, 412,954 trainable parameters: p4 8/16/32/64 gives
411,538 with the invariant head and 413,458 with the flatten head; p4m
6/11/23/45 gives 407,528 and 410,678).

Heads as `g_resnet.HEADS`: "invariant" takes the max over the group axis
before global max pooling; "flatten" feeds every plane's global maximum to the
linear layer. Stride-1 convs and 2x2 pools on sides divisible by 8 commute
with quarter-turns and flips, so at 32x32 the invariant head's logits are
exactly invariant to them (up to float rounding).

Takes raw pixel values in [0, 255]; per-image standardisation is inside the
network. Logits are float32 under any mixed-precision policy.
"""

from __future__ import annotations

import keras

from invariance_tf.layers import PerImageStandardization
from invariance_tf.networks.g_resnet import group_family, matched_widths
from invariance_tf.networks.regularizers import weight_decay_regularizer
from invariance_tf.networks.resnet9 import LOGIT_SCALE, STAGES

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _conv_bn_relu(x: keras.KerasTensor, conv, norm, filters: int, name: str) -> keras.KerasTensor:
    x = conv(filters, 3, name=f"{name}_conv")(x)
    x = norm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def g_resnet9(
    width: int = 16,
    group: str = "p4m",
    head: str = "invariant",
    input_shape: tuple[int | None, int | None, int] = (32, 32, 3),
    num_classes: int = 10,
    weight_decay: float = 0.0,
    widths: tuple[int, int, int, int] | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds G-ResNet-9 on `group` ("p4" or "p4m") matched in parameters to ResNet-9 of width `width`.

    `widths` (G-channels of the prep layer and the three stages) replace the
    matched ones; `head` is "invariant" or "flatten"; `weight_decay` is the
    coefficient of 1/2 ||w||^2 on every kernel.
    """
    if width < 1:
        raise ValueError(f"g_resnet9 width must be >= 1; got {width}")
    if widths is not None and len(widths) != 1 + len(STAGES):
        raise ValueError(f"g_resnet9 widths must be 4 G-channel counts (prep and 3 stages); got {widths}")
    reg = weight_decay_regularizer(weight_decay)
    family = group_family(group, head, reg, use_bias=False)
    widths = widths or matched_widths((width, *(multiple * width for multiple, _ in STAGES)), group)
    inputs = keras.Input(input_shape)
    x = PerImageStandardization(dtype="float32", name="standardize")(inputs)
    x = _conv_bn_relu(x, family.stem, family.norm, widths[0], "prep")
    for stage, (filters, (_, residual)) in enumerate(zip(widths[1:], STAGES), start=1):
        x = _conv_bn_relu(x, family.conv, family.norm, filters, f"stage{stage}")
        x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        if residual:
            branch = _conv_bn_relu(x, family.conv, family.norm, filters, f"stage{stage}_res1")
            branch = _conv_bn_relu(branch, family.conv, family.norm, filters, f"stage{stage}_res2")
            x = keras.layers.Add(name=f"stage{stage}_add")([x, branch])
    if family.pool is not None:
        x = family.pool(name="group_pool")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=reg, name="dense")(x)
    outputs = keras.layers.Rescaling(LOGIT_SCALE, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"{group}_resnet9_w{width}_{head}")
