"""Custom Keras layers of the networks: input standardization, shortcut padding and group-equivariant layers."""

from invariance_tf.layers.gconv import (
    GROUP_ORDERS,
    GroupBatchNormalization,
    GroupConv2D,
    GroupPool,
    P4ConvP4,
    P4ConvZ2,
    P4MConvP4M,
    P4MConvZ2,
)
from invariance_tf.layers.padding import ZeroPadChannels
from invariance_tf.layers.standardization import PerImageStandardization

__all__ = [
    "GROUP_ORDERS",
    "GroupBatchNormalization",
    "GroupConv2D",
    "GroupPool",
    "P4ConvP4",
    "P4ConvZ2",
    "P4MConvP4M",
    "P4MConvZ2",
    "PerImageStandardization",
    "ZeroPadChannels",
]
