"""Classifiers from disk (Keras, SavedModel, ONNX): loading, checks that they fit the data, `fingerprint`.

They load as evaluable models; `fingerprint` is the identity of a model's weights that names its resumable state.
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
from invariance_tf.model import classifier_network
from invariance_tf.networks import pretrained

INPUT_RANGES = {"0-255": 1.0, "0-1": 1.0 / 255.0}
LAYOUTS = ("auto", "nhwc", "nchw")


class Classifier:
    """A classifier loaded from disk as `classifier(images, training=False) -> logits`.

    Takes raw pixel values (0-255, [N, H, W, C]) like every function here,
    after any transformation, and feeds the model
    `(pixels_in_range - mean) / std`: rescaled to the range the model
    expects (`INPUT_RANGES`: "0-1" divides by 255), then normalised per
    channel (`mean`, `std`: 1 value or one per channel, in that range; None
    leaves the pixels as they are), then transposed to [N, C, H, W] for an
    "nchw" model. The black canvas of a transformation is 0 before all this.

    Attributes:
        input_shape: the model's declared input shape in its `layout`, e.g. (None, 32, 32, 3).
        variables: the model's variables (for `fingerprint`).
        layout: "nhwc" or "nchw", the axis order the model takes.
        mean, std: the per-channel normalisation, tuples of floats or None.
        digest: a hex digest of the model's file for `fingerprint` when it has no variables (ONNX), else None.
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
    ):
        if input_range not in INPUT_RANGES:
            raise ValueError(f"Unknown input_range {input_range!r}; valid ranges are {list(INPUT_RANGES)}")
        if layout not in LAYOUTS[1:]:
            raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS[1:])}")
        self._fn = fn
        self._scale = INPUT_RANGES[input_range]
        self.input_shape = tuple(input_shape)
        self.variables = list(variables)
        self.mean = _per_channel("mean", mean)
        self.std = _per_channel("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be > 0 per channel (it divides the pixels); got {list(self.std)}")
        self.layout = layout
        self.digest = digest

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The normalisation and layout that differ from the defaults (nothing for a plain nhwc model)."""
        settings = {"mean": self.mean, "std": self.std, "layout": self.layout if self.layout != "nhwc" else None}
        return {name: value for name, value in settings.items() if value is not None}

    def __call__(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        images = tf.cast(images, tf.float32) * self._scale
        if self.mean is not None:
            images = images - tf.constant(self.mean, tf.float32)
        if self.std is not None:
            images = images / tf.constant(self.std, tf.float32)
        if self.layout == "nchw":
            images = tf.transpose(images, [0, 3, 1, 2])
        return self._fn(images)


def _per_channel(name: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    """`values` as a tuple of floats, or None; raises ValueError unless they are one or more finite numbers."""
    if values is None:
        return None
    array = np.asarray(values, np.float64).ravel()
    if not array.size or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be one or more finite numbers (per channel); got {list(values)}")
    return tuple(float(value) for value in array)


def load_classifier(
    path: str | Path,
    input_range: str = "0-255",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str = "auto",
    image_shape: Sequence[int] | None = None,
) -> Classifier:
    """Loads a Keras `.keras` file, a SavedModel folder or an `.onnx` file as a `Classifier`.

    The classifier takes the given `input_range`, `mean` and `std` (see `Classifier`); a SavedModel is called
    through its `serving_default` signature.

    A SavedModel signature or an ONNX graph must take one image tensor; of
    its outputs it uses `logits` if present, else its only output. Keras and
    SavedModel classifiers take "nhwc" images; an ONNX model takes "nhwc" or
    "nchw" ones, `layout="auto"` detecting which from its declared input
    shape and `image_shape`, the data's (height, width, channels) (see
    `detect_layout`). ONNX models run in onnxruntime, without gradients.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS)}")
    preprocessing = {"input_range": input_range, "mean": mean, "std": std}
    if path.is_file() and path.suffix == ".onnx":
        return _onnx_classifier(path, layout, image_shape, **preprocessing)
    if layout == "nchw":
        raise ValueError(
            f"layout 'nchw' is for ONNX models; {path} is a Keras or SavedModel classifier, which takes nhwc images"
        )
    if path.is_file() and path.suffix == ".keras":
        model = pretrained.load_keras(path)
        network = classifier_network(model)
        return Classifier(lambda x: model(x, training=False), network.input_shape, model.weights, **preprocessing)
    if (path / "saved_model.pb").is_file():
        return _saved_model_classifier(path, **preprocessing)
    raise ValueError(
        f"model path {path} is neither a .keras file, a SavedModel folder (with saved_model.pb) nor an .onnx file"
    )


def _saved_model_classifier(path: Path, **preprocessing: Any) -> Classifier:
    """The `serving_default` signature of a SavedModel; `preprocessing` are `Classifier`'s input_range, mean, std."""
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no serving_default signature; it has {list(loaded.signatures)}")
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1:
        raise ValueError(f"SavedModel {path}: serving_default must take one image input; it takes {sorted(inputs)}")
    if "logits" not in outputs and len(outputs) != 1:
        raise ValueError(
            f"SavedModel {path}: serving_default has no 'logits' output and more than one output "
            f"({sorted(outputs)}); cannot tell which are the class scores"
        )
    ((input_name, spec),) = inputs.items()
    output_name = "logits" if "logits" in outputs else next(iter(outputs))
    return Classifier(
        lambda x: signature(**{input_name: x})[output_name], spec.shape.as_list(), loaded.variables, **preprocessing
    )


def _onnx_classifier(path: Path, layout: str, image_shape: Sequence[int] | None, **preprocessing: Any) -> Classifier:
    """An ONNX model run by onnxruntime on CPU, called from tf.function through `tf.numpy_function`.

    It therefore has no gradients; `fingerprint` digests the file's bytes. `preprocessing` are `Classifier`'s
    input_range, mean, std.
    """
    session, errors = _onnx_session(path)
    inputs, outputs = session.get_inputs(), [output.name for output in session.get_outputs()]
    if len(inputs) != 1:
        raise ValueError(f"ONNX model {path} must take one image input; it takes {[i.name for i in inputs]}")
    if "logits" not in outputs and len(outputs) != 1:
        raise ValueError(
            f"ONNX model {path} has no 'logits' output and more than one output ({outputs}); "
            "cannot tell which are the class scores"
        )
    (image_input,) = inputs
    if image_input.type != "tensor(float)":
        raise ValueError(
            f"ONNX model {path} takes {image_input.type} images; only float32 ones (tensor(float)) are supported"
        )
    declared = [dim if isinstance(dim, int) else None for dim in image_input.shape]
    if layout == "auto":
        if image_shape is None:
            raise ValueError(
                f"detecting the layout of the ONNX model {path} needs image_shape, the data's "
                "(height, width, channels); or give layout='nhwc' or 'nchw'"
            )
        layout = detect_layout(declared, image_shape)
    output_name = "logits" if "logits" in outputs else outputs[0]
    output_shape = session.get_outputs()[outputs.index(output_name)].shape
    output_dims = [dim if isinstance(dim, int) else None for dim in output_shape[1:]]

    def run(images: np.ndarray) -> np.ndarray:
        """The logits of `images`, in slices of the model's batch size if it declares one (the last zero-padded).

        An export traced on one example (PyTorch's default) takes batches of exactly that size.
        """
        size = declared[0] or len(images)
        padded = np.concatenate([images, np.zeros((-len(images) % size, *images.shape[1:]), images.dtype)])
        try:
            scores = [
                session.run([output_name], {image_input.name: padded[start : start + size]})[0]
                for start in range(0, len(padded), size)
            ]
        except errors as error:
            raise ValueError(f"onnxruntime fails on {path}: {str(error).strip().splitlines()[0]}") from None
        return np.concatenate(scores)[: len(images)].astype(np.float32, copy=False)

    def logits(images: tf.Tensor) -> tf.Tensor:
        scores = tf.numpy_function(run, [images], tf.float32, stateful=False)
        scores.set_shape([images.shape[0], *output_dims])
        return scores

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Classifier(logits, declared, [], layout=layout, digest=digest, **preprocessing)


def _onnx_session(path: Path) -> tuple[Any, tuple[type[Exception], ...]]:
    """An onnxruntime CPU session of the ONNX file `path` (warnings silenced), and onnxruntime's exception types.

    The exception types share no base class below Exception.
    """
    try:
        import onnxruntime
        from onnxruntime.capi import onnxruntime_pybind11_state
    except ImportError:
        raise ImportError(f'reading the ONNX model {path} needs onnxruntime: pip install -e ".[onnx]"') from None
    errors = tuple(
        value
        for value in vars(onnxruntime_pybind11_state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), errors
    except errors as error:
        raise ValueError(f"onnxruntime cannot read {path}: {str(error).strip().splitlines()[0]}") from None


def _input_dims(image_shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The per-example input shape of a `layout` model for images of `image_shape` (height, width, channels)."""
    height, width, channels = image_shape
    return (channels, height, width) if layout == "nchw" else (height, width, channels)


def _fits(declared: Sequence[int | None], dims: Sequence[int]) -> bool:
    """Whether a declared input shape [batch, ...] (None: any size) takes examples of shape `dims`."""
    return len(declared) == len(dims) + 1 and all(d is None or d == e for d, e in zip(tuple(declared)[1:], dims))


def detect_layout(declared: Sequence[int | None], image_shape: Sequence[int]) -> str:
    """The axis order, "nhwc" or "nchw", in which a model's declared input shape takes images of `image_shape`.

    The declared shape is [batch, ...] (None: any size) and `image_shape` is (height, width, channels), so the
    order says where the model's channel axis is. Raises ValueError (one line) when both orders fit (e.g. every
    size unknown) or neither does.
    """
    fitting = [layout for layout in LAYOUTS[1:] if _fits(declared, _input_dims(image_shape, layout))]
    if len(fitting) == 1:
        return fitting[0]
    nhwc, nchw = (", ".join(map(str, _input_dims(image_shape, layout))) for layout in LAYOUTS[1:])
    if fitting:
        raise ValueError(
            f"cannot tell the layout of the model input {list(declared)}: both [batch, {nhwc}] (nhwc) "
            f"and [batch, {nchw}] (nchw) fit; give --input_layout=nhwc or --input_layout=nchw"
        )
    raise ValueError(
        f"model input must be [batch, {nhwc}] (nhwc) or [batch, {nchw}] (nchw) to fit the data; "
        f"the model declares {list(declared)}"
    )


def check_classifier(model: Model, images, num_classes: int) -> None:
    """Raises ValueError (one line) unless `model` maps images like `images` [N, H, W, C] to logits [N, num_classes].

    Checks the declared `input_shape` if the model has one (in its `layout`,
    "nhwc" unless it says otherwise), that a `mean` or `std` has 1 value or
    one per channel, then classifies two images: cheap, so a wrong model
    fails before any attack runs.
    """
    images = np.asarray(images)
    layout = getattr(model, "layout", "nhwc")
    expected = _input_dims(images.shape[1:], layout)
    declared = getattr(model, "input_shape", None)
    if declared is not None and not _fits(declared, expected):
        named = " (nchw)" if layout == "nchw" else ""
        raise ValueError(
            f"model input must be [batch, {', '.join(map(str, expected))}]{named} to fit the data; "
            f"the model declares {list(declared)}"
        )
    for name in ("mean", "std"):
        values = getattr(model, name, None)
        if values is not None and len(values) not in (1, images.shape[-1]):
            raise ValueError(
                f"{name} {list(values)} has {len(values)} values; give 1 or {images.shape[-1]} "
                "(one per channel of the images)"
            )
    sample = images[:2].astype(np.float32)
    try:
        logits = model(tf.constant(sample), training=False)
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise ValueError(
            f"model fails on a batch of shape {list(sample.shape)}: {str(error).strip().splitlines()[0]}"
        ) from None
    shape = tuple(logits.shape)
    if shape != (len(sample), num_classes) or not logits.dtype.is_floating:
        raise ValueError(
            f"model output must be float [batch, {num_classes}] (one score per class of the data); "
            f"got {logits.dtype.name} {list(shape)} for a batch of {len(sample)}"
        )


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


def _variables_digest(variables: Sequence) -> str:
    """A hex digest of variables' paths (or names), shapes, dtypes and values."""
    digest = hashlib.sha256()
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        digest.update(f"{getattr(variable, 'path', getattr(variable, 'name', ''))}{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
