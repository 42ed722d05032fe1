"""Classifiers from disk (a run, Keras, SavedModel, ONNX) as evaluable models, checks that they fit, `fingerprint`.

The kinds, their loaders and the rules they follow (input convention, output shape, dtype) are `model_files`';
here a loaded model is wrapped as an evaluable `Classifier`. `fingerprint` is the identity of a model's weights
that names its resumable state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from invariance_tf.evaluation.result import Model
from invariance_tf.layers.input_convention import PER_CHANNEL, InputConvention, fits_channels
from invariance_tf.model import classifier_network
from invariance_tf.model_files import (
    LAYOUTS,
    Source,
    check_input_shape,
    check_scores,
    input_dims,
    load_source,
    resolve,
)


class Classifier:
    """A classifier loaded from disk as `classifier(images, training=False) -> logits`.

    Takes raw pixel values (0-255, [N, H, W, C]) like every function here,
    after any transformation, and feeds the model what its owner wrote it
    for, `InputConvention(input_range, mean, std)` of them (see
    `layers.InputConvention`: "0-1" divides by 255, then `mean` and `std`
    normalise per channel; None leaves the pixels as they are), transposed
    to [N, C, H, W] for an "nchw" model. The black canvas of a
    transformation is 0 before all this.

    Attributes:
        input_shape: the model's declared input shape in its `layout`, e.g. (None, 32, 32, 3).
        variables: the model's variables (for `fingerprint`).
        convention: the `InputConvention` layer.
        layout: "nhwc" or "nchw", the axis order the model takes.
        mean, std: the per-channel normalisation, tuples of floats or None.
        digest: a hex digest of the model's file for `fingerprint` when it has no variables (ONNX), else None.
        network: the Keras classifier inside, for a Keras file or run folder (`symmetry` reads it); else None.
    """

    def __init__(
        self,
        fn: Callable[[tf.Tensor], tf.Tensor],
        input_shape: tuple,
        variables: Sequence[tf.Variable],
        input_range: str = "0-255",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        layout: str = "nhwc",
        digest: str | None = None,
        network: keras.Model | None = None,
    ):
        if layout not in LAYOUTS[1:]:
            raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS[1:])}")
        self._fn = fn
        self.convention = InputConvention(input_range, mean, std)
        self.input_shape = tuple(input_shape)
        self.variables = list(variables)
        self.mean, self.std = self.convention.mean, self.convention.std
        self.layout = layout
        self.digest = digest
        self.network = network

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The normalisation and layout that differ from the defaults (nothing for a plain nhwc model)."""
        settings = {"mean": self.mean, "std": self.std, "layout": self.layout if self.layout != "nhwc" else None}
        return {name: value for name, value in settings.items() if value is not None}

    def __call__(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        images = self.convention(images)
        if self.layout == "nchw":
            images = tf.transpose(images, [0, 3, 1, 2])
        return self._fn(images)


def load_classifier(
    path: str | Path | Source,
    input_range: str = "0-255",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str = "auto",
    image_shape: Sequence[int] | None = None,
) -> Classifier:
    """Loads a trainers.fit run folder, a `.keras` file, a SavedModel folder or an `.onnx` file as a `Classifier`.

    `path` names it, or is the `model_files.Source` that `model_files.resolve` found for it; the loader of its
    kind is `model_files.load_source`'s (which states the layouts each kind takes; `layout="auto"` detects an ONNX
    model's from `image_shape`, the data's (height, width, channels)). The classifier takes the given
    `input_range`, `mean` and `std` (see `Classifier`), or a run folder's recorded ones (`Source.convention`).
    """
    source = path if isinstance(path, Source) else resolve(path, flag="--model")
    preprocessing = source.convention(InputConvention(input_range, mean, std), "--model").settings()
    loaded = load_source(source, layout, image_shape)
    return Classifier(
        loaded.call,
        loaded.input_shape,
        loaded.variables,
        layout=loaded.layout,
        digest=loaded.digest,
        network=loaded.network,
        **preprocessing,
    )


def check_classifier(model: Model, images, num_classes: int) -> None:
    """Raises ValueError (one line) unless `model` maps images like `images` [N, H, W, C] to logits [N, num_classes].

    Checks the declared `input_shape` if the model has one (in its `layout`,
    "nhwc" unless it says otherwise; `model_files.check_input_shape`), that a
    `mean` or `std` fits the channels (`fits_channels`), then classifies two
    images (`model_files.check_scores`): cheap, so a wrong model fails before
    any attack runs.
    """
    images = np.asarray(images)
    layout = getattr(model, "layout", "nhwc")
    declared = getattr(model, "input_shape", None)
    if declared is not None:
        check_input_shape(declared, input_dims(images.shape[1:], layout), "model", "nchw" if layout == "nchw" else "")
    for name in ("mean", "std"):
        values = getattr(model, name, None)
        if not fits_channels(values, images.shape[-1]):
            raise ValueError(
                f"{name} {list(values)} has {len(values)} values; {PER_CHANNEL.format(channels=images.shape[-1])}"
            )
    sample = images[:2].astype(np.float32)
    try:
        logits = model(tf.constant(sample), training=False)
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise ValueError(
            f"model fails on a batch of shape {list(sample.shape)}: {str(error).strip().splitlines()[0]}"
        ) from None
    check_scores(logits, len(sample), num_classes, "model")


def fingerprint(model: Model) -> str:
    """A hex digest of the model's variables (names, shapes and values): equal for the same weights.

    A `Classifier` with a `digest` (an ONNX model, which has no variables)
    is named by it instead. A `Classifier`'s `preprocessing` (normalisation,
    nchw layout) is digested with it when set, so a changed one never reuses
    a resumable state; without it the digest is that of the variables alone,
    as before these settings existed.
    """
    if isinstance(model, Classifier) and (model.digest or model.preprocessing):
        key = {"model": model.digest or _variables_digest(model.variables), **model.preprocessing}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    variables = model.weights if isinstance(model, keras.Model) else getattr(model, "variables", None)
    if variables is None:
        raise ValueError(f"cannot fingerprint {type(model).__name__}: it has no weights or variables")
    return _variables_digest(variables)


def model_key(model: Model) -> str:
    """What names a model in resumable state (`resumable`'s `model_key`): its weights and how it reads pixels.

    A `Classifier`'s `fingerprint` and its input range; a Keras model's, of the classifier inside
    (`classifier_network`, so an `InvarianceModel` is named by its network); any other model's `fingerprint`.
    """
    if isinstance(model, Classifier):
        return f"{fingerprint(model)}-{model.convention.input_range}"
    return fingerprint(classifier_network(model) if isinstance(model, keras.Model) else model)


def _variables_digest(variables: Sequence) -> str:
    """A hex digest of variables' paths (or names), shapes, dtypes and values."""
    digest = hashlib.sha256()
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        digest.update(f"{getattr(variable, 'path', getattr(variable, 'name', ''))}{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
