"""What a network costs: its parameters and its multiply-accumulates (MACs) per image.

Parameters are counted as Cohen & Welling's and most papers' code counts them: trainable weights (kernels, biases,
batch norm gamma and beta), not batch norm moving statistics. MACs are those of convolutions (planar and G-convs, whose
cost is that of the planar conv with their expanded filter bank) and dense layers, for one image of the network's
input shape; element-wise layers, batch norm and pooling are not counted.
"""

from __future__ import annotations

import math

import keras

from invariance_tf.layers.gconv import GroupConv2D

CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
WEIGHTED_WITHOUT_MACS = (keras.layers.BatchNormalization,)


def parameter_count(model: keras.Model) -> int:
    """The number of trainable scalars of `model`."""
    return sum(math.prod(weight.shape) for weight in model.trainable_weights)


def _output_positions(layer: keras.layers.Layer) -> int:
    """Output positions per image (H x W for a conv, 1 for a dense layer on vectors); ValueError if not static."""
    shape = layer.output.shape[1:-1]
    if any(side is None for side in shape):
        raise ValueError(f"MACs need a static input shape; layer {layer.name!r} outputs {layer.output.shape}")
    return math.prod(shape)


def _layer_macs(layer: keras.layers.Layer) -> int | None:
    """MACs per image of one layer; None when it holds weights whose cost it cannot see."""
    if isinstance(layer, keras.Model):
        return macs_per_image(layer)
    if isinstance(layer, GroupConv2D):
        return math.prod(layer.bank_shape) * _output_positions(layer)
    if isinstance(layer, (*CONVOLUTIONS, keras.layers.Dense)):
        return math.prod(layer.kernel.shape) * _output_positions(layer)
    if not layer.weights or isinstance(layer, WEIGHTED_WITHOUT_MACS):
        return 0
    return None


def macs_per_image(model: keras.Model) -> int | None:
    """Multiply-accumulates of `model`'s convolutions and dense layers for one image of its input shape.

    None when a layer holds weights of unknown cost (e.g. the `TFSMLayer` of a SavedModel loaded by
    `--init_model`); ValueError when the input shape is not static.
    """
    total = 0
    for layer in model.layers:
        macs = _layer_macs(layer)
        if macs is None:
            return None
        total += macs
    return total
