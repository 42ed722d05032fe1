"""A trained classifier from disk as the network fine-tuning trains (`--init_model`): `trainable_network`.

The kinds, their loaders and the rules they follow are `model_files`', shared with `trainers.evaluate`; fine-tuning
refuses an ONNX model (`trainable_source`) and, among the rules, also needs logits, not probabilities
(`model_files.refuse_probabilities`). The network it builds takes raw pixels (0-255) and returns logits, the
owner's model inside behind its `InputConvention`; `owner_network` takes it out again, so a fine-tuned model is
saved as the owner wrote it. A SavedModel is trained as its `keras.layers.TFSMLayer` (its own batch-norm
statistics and dtype: float32 only), which a run's model.keras then refers to by path. A loaded network keeps its
own regularisation (the project's networks carry `--weight_decay` in their kernel regularisers; another network
gets none).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import keras
import numpy as np

from invariance_tf.layers.input_convention import InputConvention
from invariance_tf.model_files import (
    Source,
    check_input_shape,
    check_scores,
    load_source,
    refuse_probabilities,
    resolve,
)

ONNX_NOT_TRAINABLE = (
    "is an ONNX model, which fine-tuning cannot train (onnxruntime gives no gradients and no ONNX-to-Keras "
    "converter installs beside this TensorFlow): evaluate it with trainers.evaluate --model, or re-create the "
    "network in Keras to fine-tune it (docs/finetuning.md)"
)
PROBES = 4
"""Random raw images a fine-tuned network classifies before training, to check it returns logits."""


def trainable_source(path: str | Path) -> Source:
    """`resolve(path)` for fine-tuning: an ONNX file is refused (ValueError, one line)."""
    source = resolve(path)
    if source.kind == "onnx":
        raise ValueError(f"--init_model={path} {ONNX_NOT_TRAINABLE}")
    return source


def trainable_network(
    path: str | Path,
    image_shape: tuple[int, int, int],
    num_classes: int,
    policy: str,
    convention: InputConvention | None = None,
) -> keras.Model:
    """The classifier at `path` as a trainable network from raw pixels (0-255) to logits, under the dtype `policy`.

    `convention` is the input the owner's model takes (the flags; a run folder's recorded one instead): unless it
    is raw pixels, the owner's model sits behind an `InputConvention` layer (`owner_network` takes it out).
    Raises ValueError (one line) when the network does not take images of `image_shape`, does not return
    `num_classes` logits, returns probabilities or cannot take `policy`, and for an ONNX file.
    """
    source = trainable_source(path)
    where = f"--init_model={path}"
    convention = source.convention(convention or InputConvention(), "--init_model")
    if source.kind == "saved_model" and policy != "float32":
        raise ValueError(
            f"{where} is a SavedModel, which computes in its own dtype: pass "
            f"--precision=float32 (the run's policy is {policy})"
        )
    loaded = load_source(source, "nhwc").trainable
    owner = loaded if source.kind == "saved_model" else _with_policy(loaded, policy, where)
    check_input_shape(owner.input_shape, image_shape, where)
    network = owner if convention.is_identity else _behind(convention, owner, image_shape)
    probes = np.random.default_rng(0).uniform(0, 255, (PROBES, *image_shape)).astype(np.float32)
    scores = network(probes, training=False)
    check_scores(scores, PROBES, num_classes, where)
    refuse_probabilities(scores, where)
    return network


def owner_network(network: keras.Model) -> keras.Model:
    """The owner's model inside a network `trainable_network` put behind an `InputConvention`, else `network` itself."""
    layers = network.layers
    if len(layers) == 3 and isinstance(layers[1], InputConvention) and isinstance(layers[2], keras.Model):
        return layers[2]
    return network


def _behind(convention: InputConvention, owner: keras.Model, image_shape: tuple[int, int, int]) -> keras.Model:
    """`owner` taking raw pixels: the Functional model raw pixels -> `convention` -> `owner`."""
    inputs = keras.Input(image_shape, name="raw_pixels")
    return keras.Model(inputs, owner(convention(inputs)), name=f"{owner.name}_on_raw_pixels")


def _with_policy(network: keras.Model, policy: str, where: str) -> keras.Model:
    """`network`, or a copy with its weights whose layers compute under `policy`.

    A layer pinned to another policy than the network's usual one (e.g. float32 logits in a mixed model) stays
    pinned.
    """
    usual = Counter(layer.dtype_policy.name for layer in network.layers).most_common(1)[0][0]
    if usual == policy:
        return network

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.dtype_policy.name != usual:
            return layer.__class__.from_config(layer.get_config())
        return layer.__class__.from_config({**layer.get_config(), "dtype": policy})

    try:
        copy = keras.models.clone_model(network, clone_function=clone)
    except ValueError:
        raise ValueError(
            f"{where} computes in {usual} and, not being a Functional or Sequential "
            f"model, cannot be rebuilt in {policy}: pass --precision={usual}"
        ) from None
    copy.set_weights(network.get_weights())
    return copy
