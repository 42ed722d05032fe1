"""Group-equivariant layers (p4 and p4m G-convs, group pooling, group batch norm)."""

from invariance_tf.layers.gconv import (
    GROUP_ORDERS,
    GroupBatchNormalization,
    GroupPool,
    P4ConvP4,
    P4ConvZ2,
    P4MConvP4M,
    P4MConvZ2,
)

__all__ = [
    "GROUP_ORDERS",
    "GroupBatchNormalization",
    "GroupPool",
    "P4ConvP4",
    "P4ConvZ2",
    "P4MConvP4M",
    "P4MConvZ2",
]
