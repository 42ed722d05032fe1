"""Custom Keras layers: the owner's input convention, input standardization, shortcut padding, G-convolutions."""

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
from invariance_tf.layers.input_convention import InputConvention
from invariance_tf.layers.padding import ZeroPadChannels
from invariance_tf.layers.standardization import PerImageStandardization

__all__ = [
    "GROUP_ORDERS",
    "GroupBatchNormalization",
    "GroupConv2D",
    "GroupPool",
    "InputConvention",
    "P4ConvP4",
    "P4ConvZ2",
    "P4MConvP4M",
    "P4MConvZ2",
    "PerImageStandardization",
    "ZeroPadChannels",
]
