"""Trained classifiers from disk: one loader per kind, the rules they all follow, and fine-tuning's network.

`resolve` tells the kinds apart: a `trainers.fit` run folder (its `model.keras` and the input convention its
config.json records), a `.keras` file, a SavedModel folder (`saved_model.pb`) and an `.onnx` file. Each rule is
stated here once and shared by `trainers.evaluate` (`evaluation.classifiers`) and fine-tuning (`--init_model`):

- input: the pixel convention the owner wrote the model for (`ConventionOptions`, the flags `--input_range`,
  `--mean`, `--std`, as the layer `layers.InputConvention`); a run folder's is the one it records
  (`Source.convention`); images are float32 [batch, H, W, C] (`check_input_shape`);
- output: the class scores are the output named `logits`, else the only one (`scores_output`), float
  [batch, classes] (`check_scores`); fine-tuning also needs logits, not probabilities (`refuse_probabilities`);
- trust: a `.keras` file loads in Keras' safe mode (`load_keras`); a SavedModel is a TensorFlow program, to be
  trusted as code (`saved_model_notice`).

`load` builds the network fine-tuning trains: raw pixels (0-255) in, logits out, the owner's model inside behind
its `InputConvention`; `owner_network` takes it out again, so a fine-tuned model is saved as the owner wrote it.
A SavedModel becomes a trainable `keras.layers.TFSMLayer` (its own batch-norm statistics and dtype: float32
only), which a run's model.keras then refers to by path. A loaded network keeps its own regularisation (the
project's networks carry `--weight_decay` in their kernel regularisers; another network gets none).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from invariance_tf.layers.input_convention import INPUT_RANGES, InputConvention
from invariance_tf.model import classifier_network
from invariance_tf.options import flag_value, option

KINDS = (
    "a trainers.fit run folder (with model.keras)",
    "a .keras file",
    "a SavedModel folder (with saved_model.pb)",
    "an .onnx file",
)
SAVED_MODEL_NOTICE = (
    "note: {path} is a SavedModel, a TensorFlow program that may read or write files when run; "
    "load only SavedModels you would trust as code"
)
ONNX_NOT_TRAINABLE = (
    "is an ONNX model, which fine-tuning cannot train (onnxruntime gives no gradients and no ONNX-to-Keras "
    "converter installs beside this TensorFlow): evaluate it with trainers.evaluate --model, or re-create the "
    "network in Keras to fine-tune it (docs/finetuning.md)"
)
PROBES = 4
"""Random raw images a fine-tuned network classifies before training, to check it returns logits."""


@dataclasses.dataclass
class ConventionOptions:
    """The flags `--input_range`, `--mean` and `--std`: the input a classifier's owner wrote it for.

    `trainers.evaluate` (`EvaluateOptions`) and `trainers.fit` (`ExperimentConfig`) both inherit them.
    """

    input_range: str = option("0-255", "pixel scale the model expects", choices=INPUT_RANGES)
    mean: tuple[float, ...] = option(
        (),
        "per-channel mean the model expects subtracted, in the --input_range scale: 1 value or one per channel "
        "(empty = none); model input = (pixels_in_range - mean) / std",
    )
    std: tuple[float, ...] = option(
        (),
        "per-channel standard deviation the model expects pixels divided by (after --mean): 1 value or one per "
        "channel, each > 0 (empty = none)",
    )

    def convention(self) -> InputConvention:
        """The `InputConvention` layer these flags describe."""
        return InputConvention(self.input_range, self.mean, self.std)

    def given_flags(self) -> list[str]:
        """The names of these flags set to other than raw pixels (0-255, no mean, no std)."""
        defaults = {"input_range": "0-255", "mean": (), "std": ()}
        return [name for name, default in defaults.items() if (getattr(self, name) or ()) != default]

    def convention_rules(self, channels: int | None = None) -> list[tuple[str, bool, str]]:
        """`options.check` rules: finite means, stds > 0 and, with the images' `channels`, 1 value or one each."""
        not_finite = [value for value in self.mean or () if not math.isfinite(value)]
        not_positive = [value for value in self.std or () if not (math.isfinite(value) and value > 0)]
        rules = [
            ("mean", not not_finite, f"{flag_value(not_finite[:1])} is not a finite number"),
            ("std", not not_positive, f"{flag_value(not_positive[:1])} is not a number > 0"),
        ]
        if channels is not None:
            rules += [
                (
                    name,
                    len(values or ()) in (0, 1, channels),
                    f"give 1 value or {channels} (one per channel of the images); got {len(values)}",
                )
                for name, values in (("mean", self.mean), ("std", self.std))
            ]
        return rules


@dataclasses.dataclass(frozen=True)
class Source:
    """A classifier on disk, as `resolve` finds it.

    Attributes:
        kind: "run", "keras", "saved_model" or "onnx".
        path: the file or folder that holds the model (a run folder's model.keras).
        recorded: for a run folder, the `InputConvention` its config.json records; else None.
        config: for a run folder with a config.json, what it records (the `trainers.fit` flags, by name); else None.
    """

    kind: str
    path: Path
    recorded: InputConvention | None = None
    config: dict | None = None

    def convention(self, given: InputConvention, flag: str) -> InputConvention:
        """The input convention of the model: a run's recorded one, else `given` (the flags).

        Flags that set another convention than a run's recorded one are refused (ValueError naming both).
        """
        if self.recorded is None:
            return given
        recorded = self.recorded
        if not given.is_identity and given.settings() != recorded.settings():
            raise ValueError(
                f"{flag}={self.path.parent} records the input convention {recorded.settings()}; the flags give "
                f"{given.settings()}: drop --input_range, --mean and --std (a run's own convention is used)"
            )
        return recorded


def resolve(path: str | Path, flag: str = "--init_model") -> Source:
    """The classifier `path` names; raises ValueError (one line, naming `flag`) when it is none of `KINDS`."""
    path = Path(path)
    if path.is_dir() and (path / "model.keras").is_file():
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
        return Source("run", path / "model.keras", recorded_convention(path), config)
    if path.is_file() and path.suffix in (".keras", ".onnx"):
        return Source(path.suffix[1:], path)
    if (path / "saved_model.pb").is_file():
        return Source("saved_model", path)
    reason = "does not exist" if not path.exists() else "is none of the kinds it can be"
    raise ValueError(f"{flag}={path} {reason}: give {', '.join(KINDS[:-1])} or {KINDS[-1]}")


def trainable_source(path: str | Path) -> Source:
    """`resolve(path)` for fine-tuning: an ONNX file is refused (ValueError, one line)."""
    source = resolve(path)
    if source.kind == "onnx":
        raise ValueError(f"--init_model={path} {ONNX_NOT_TRAINABLE}")
    return source


def recorded_convention(run_dir: Path) -> InputConvention:
    """The `InputConvention` a run folder's config.json records (raw pixels for runs older than the flags)."""
    config = run_dir / "config.json"
    recorded = json.loads(config.read_text()) if config.is_file() else {}
    return InputConvention(recorded.get("input_range", "0-255"), recorded.get("mean"), recorded.get("std"))


def load_keras(path: str | Path) -> keras.Model:
    """`keras.models.load_model(path)`, uncompiled, in Keras' safe mode (no code from the file runs).

    The model.keras of a `trainers.fit` run fine-tuned from a SavedModel holds a `TFSMLayer`, which Keras loads
    only outside its safe mode: allowed when the run's config.json beside it records that SavedModel as
    `init_model` (with `saved_model_notice`), refused with one line otherwise.
    """
    path = Path(path)
    saved_model = _fine_tuned_from_saved_model(path)
    if saved_model is not None:
        saved_model_notice(saved_model)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=saved_model is None)
    except ValueError as error:
        if "TFSMLayer" not in str(error):
            raise
        raise ValueError(
            f"{path} holds a keras.layers.TFSMLayer (it loads an external SavedModel) and is not a "
            "trainers.fit run fine-tuned from one; if you trust it, call "
            "keras.config.enable_unsafe_deserialization() first"
        ) from None


def _fine_tuned_from_saved_model(path: Path) -> Path | None:
    """The SavedModel the run beside `path` was fine-tuned from, as its config.json records, or None."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    init_model = json.loads(config.read_text()).get("init_model") or ""
    return Path(init_model) if init_model and (Path(init_model) / "saved_model.pb").is_file() else None


def saved_model_notice(path: str | Path) -> None:
    """Says on stderr, once per command, that the SavedModel at `path` is a program that runs when loaded."""
    print(SAVED_MODEL_NOTICE.format(path=path), file=sys.stderr, flush=True)


def scores_output(names: Sequence[str], where: str) -> str:
    """Which of a model's outputs holds the class scores: `logits` if it has one, else its only output.

    Raises ValueError (one line, starting with `where`) when there are several outputs and none is `logits`.
    """
    if "logits" in names:
        return "logits"
    if len(names) != 1:
        raise ValueError(
            f"{where} has no 'logits' output and more than one output ({sorted(names)}); "
            "cannot tell which are the class scores"
        )
    return names[0]


def fits(declared: Sequence[int | None], dims: Sequence[int]) -> bool:
    """Whether a declared input shape [batch, ...] (None: any size) takes examples of shape `dims`."""
    return len(declared) == len(dims) + 1 and all(d is None or d == e for d, e in zip(tuple(declared)[1:], dims))


def check_input_shape(declared: Sequence[int | None], dims: Sequence[int], where: str, layout: str = "") -> None:
    """Raises ValueError (one line) unless a model declaring the input shape `declared` takes examples of `dims`.

    `dims` are in the model's axis order, named by `layout` in the message when given.
    """
    if not fits(declared, dims):
        named = f" ({layout})" if layout else ""
        raise ValueError(
            f"{where} input must be [batch, {', '.join(map(str, dims))}]{named} to fit the data; "
            f"the model declares {list(declared)}"
        )


def check_scores(scores, batch: int, num_classes: int, where: str) -> None:
    """Raises ValueError (one line) unless `scores` are float [batch, num_classes]: one score per class."""
    shape = tuple(scores.shape)
    if shape != (batch, num_classes) or not tf.as_dtype(scores.dtype).is_floating:
        raise ValueError(
            f"{where} output must be float [batch, {num_classes}] (one score per class of the data); "
            f"got {scores.dtype.name} {list(shape)} for a batch of {batch}"
        )


def refuse_probabilities(scores: np.ndarray, where: str) -> None:
    """Raises ValueError (one line) when `scores` [batch, classes] look like probabilities, not logits.

    They do when every row is >= 0 and sums to 1 (a final softmax): h = KL and the cross-entropy term take logits.
    """
    scores = np.asarray(scores, np.float64)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-2):
        raise ValueError(
            f"{where} returns probabilities (on {len(scores)} random images every output row is >= 0 and sums to "
            "1), but fine-tuning needs logits (h=KL and the cross-entropy apply the softmax themselves): remove "
            "its final softmax and save it again"
        )


def load(
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
    if source.kind == "saved_model":
        owner = _saved_model_network(source.path, image_shape, policy, where)
    else:
        owner = _with_policy(classifier_network(load_keras(source.path)), policy, where)
    check_input_shape(owner.input_shape, image_shape, where)
    network = owner if convention.is_identity else _behind(convention, owner, image_shape)
    probes = np.random.default_rng(0).uniform(0, 255, (PROBES, *image_shape)).astype(np.float32)
    scores = network(probes, training=False)
    check_scores(scores, PROBES, num_classes, where)
    refuse_probabilities(scores, where)
    return network


def owner_network(network: keras.Model) -> keras.Model:
    """The owner's model inside a network `load` put behind an `InputConvention`, else `network` itself."""
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


def _saved_model_network(source: Path, image_shape: tuple[int, int, int], policy: str, where: str) -> keras.Model:
    """The `serving_default` signature of the SavedModel `source` as a trainable Keras model (float32 only)."""
    if policy != "float32":
        raise ValueError(
            f"{where} is a SavedModel, which computes in its own dtype: pass "
            f"--precision=float32 (the run's policy is {policy})"
        )
    saved_model_notice(source)
    layer = keras.layers.TFSMLayer(str(source), call_endpoint="serving_default", trainable=True)
    inputs = keras.Input(image_shape)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = outputs[scores_output(list(outputs), f"{where}: serving_default")]
    return keras.Model(inputs, outputs, name="saved_model_network")
