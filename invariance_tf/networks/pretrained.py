"""A trained classifier from disk as the starting network of a run (`--init_model`: robust fine-tuning).

The network must map raw pixels [batch, H, W, C] (0-255, like every network here) to logits [batch, classes].
Three kinds of path are read:

- a `trainers.fit` run folder: its `model.keras`;
- a `.keras` file: an `InvarianceModel` (its network is used) or any Keras classifier;
- a SavedModel folder (`saved_model.pb`, e.g. from `trainers.export`): its `serving_default` signature as a
  trainable `keras.layers.TFSMLayer`, whose `logits` output (or only output) is the network's. A SavedModel
  keeps its own batch-norm statistics and dtype: it trains in float32 only. The run's model.keras then refers
  to the SavedModel by its path, which must stay in place; `load_keras` loads it.

A loaded network keeps its own regularisation (the project's networks carry `--weight_decay` in their kernel
regularisers; another network gets none).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import keras

from invariance_tf.model import classifier_network

KINDS = ("a trainers.fit run folder (with model.keras)", "a .keras file", "a SavedModel folder (with saved_model.pb)")


def resolve(path: str | Path) -> Path:
    """The file or folder `path` names: a run folder's `model.keras`, else `path`.

    Raises ValueError (one line) when it is none of `KINDS`.
    """
    path = Path(path)
    if path.is_dir() and (path / "model.keras").is_file():
        return path / "model.keras"
    if (path.is_file() and path.suffix == ".keras") or (path / "saved_model.pb").is_file():
        return path
    reason = "does not exist" if not path.exists() else "is none of the kinds it can be"
    raise ValueError(f"--init_model={path} {reason}: give {', '.join(KINDS[:-1])} or {KINDS[-1]}")


def load(path: str | Path, image_shape: tuple[int, int, int], num_classes: int, policy: str) -> keras.Model:
    """The classifier at `path` as a trainable network computing under the dtype policy `policy`.

    Raises ValueError (one line) when the network does not take images of `image_shape` or does not return
    `num_classes` logits, or when its layers cannot take `policy`.
    """
    source = resolve(path)
    if source.suffix == ".keras":
        network = _with_policy(classifier_network(load_keras(source)), policy, path)
    else:
        network = _saved_model_network(source, image_shape, policy, path)
    _check_fit(network, image_shape, num_classes, path)
    return network


def load_keras(path: str | Path) -> keras.Model:
    """`keras.models.load_model(path)`, uncompiled.

    The model.keras of a `trainers.fit` run fine-tuned from a SavedModel holds a `TFSMLayer`, which Keras loads
    only outside its safe mode: allowed when the run's config.json beside it records that SavedModel as
    `init_model`, refused with one line otherwise.
    """
    path = Path(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not _fine_tuned_from_saved_model(path))
    except ValueError as error:
        if "TFSMLayer" not in str(error):
            raise
        raise ValueError(
            f"{path} holds a keras.layers.TFSMLayer (it loads an external SavedModel) and is not a "
            "trainers.fit run fine-tuned from one; if you trust it, call "
            "keras.config.enable_unsafe_deserialization() first"
        ) from None


def _fine_tuned_from_saved_model(path: Path) -> bool:
    config = path.parent / "config.json"
    if not config.is_file():
        return False
    init_model = json.loads(config.read_text()).get("init_model") or ""
    return bool(init_model) and (Path(init_model) / "saved_model.pb").is_file()


def _check_fit(network: keras.Model, image_shape: tuple[int, int, int], num_classes: int, path) -> None:
    declared = tuple(network.input_shape)[1:]
    if len(declared) != 3 or any(d is not None and d != e for d, e in zip(declared, image_shape)):
        raise ValueError(
            f"--init_model={path} takes inputs of shape {list(declared)} but the data's images are {list(image_shape)}"
        )
    outputs = network.output_shape[-1] if len(network.output_shape) == 2 else None
    if outputs != num_classes:
        raise ValueError(
            f"--init_model={path} returns {list(network.output_shape)[1:]} scores per image but the "
            f"data has {num_classes} classes"
        )


def _with_policy(network: keras.Model, policy: str, path) -> keras.Model:
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
            f"--init_model={path} computes in {usual} and, not being a Functional or Sequential "
            f"model, cannot be rebuilt in {policy}: pass --precision={usual}"
        ) from None
    copy.set_weights(network.get_weights())
    return copy


def _saved_model_network(source: Path, image_shape: tuple[int, int, int], policy: str, path) -> keras.Model:
    if policy != "float32":
        raise ValueError(
            f"--init_model={path} is a SavedModel, which computes in its own dtype: pass "
            f"--precision=float32 (the run's policy is {policy})"
        )
    layer = keras.layers.TFSMLayer(str(source), call_endpoint="serving_default", trainable=True)
    inputs = keras.Input(image_shape)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if "logits" not in outputs and len(outputs) != 1:
            raise ValueError(
                f"--init_model={path}: serving_default has no 'logits' output and more than one "
                f"output ({sorted(outputs)}); cannot tell which are the class scores"
            )
        outputs = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name="saved_model_network")
