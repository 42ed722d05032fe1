"""Classifiers from disk (a run, Keras, SavedModel, ONNX) as evaluable models, checks that they fit, `fingerprint`.

The kinds and the rules they follow (input convention, output shape, dtype) are `networks.pretrained`'s; here
they load as evaluable models. `fingerprint` is the identity of a model's weights that names its resumable state.
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
from invariance_tf.layers.input_convention import InputConvention
from invariance_tf.model import classifier_network
from invariance_tf.networks import pretrained

LAYOUTS = ("auto", "nhwc", "nchw")


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
    path: str | Path | pretrained.Source,
    input_range: str = "0-255",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layout: str = "auto",
    image_shape: Sequence[int] | None = None,
) -> Classifier:
    """Loads a trainers.fit run folder, a `.keras` file, a SavedModel folder or an `.onnx` file as a `Classifier`.

    `path` names it, or is the `pretrained.Source` that `pretrained.resolve` found for it.
    The classifier takes the given `input_range`, `mean` and `std` (see `Classifier`), or a run folder's recorded
    ones (`pretrained.Source.convention`); a SavedModel is called through its `serving_default` signature.

    A SavedModel signature or an ONNX graph must take one image tensor; its class scores are the output
    `pretrained.scores_output` names. Keras and SavedModel classifiers take "nhwc" images; an ONNX model takes
    "nhwc" or "nchw" ones, `layout="auto"` detecting which from its declared input shape and `image_shape`, the
    data's (height, width, channels) (see `detect_layout`). ONNX models run in onnxruntime, without gradients.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS)}")
    source = path if isinstance(path, pretrained.Source) else pretrained.resolve(path, flag="--model")
    preprocessing = source.convention(InputConvention(input_range, mean, std), "--model").settings()
    if source.kind == "onnx":
        return _onnx_classifier(source.path, layout, image_shape, **preprocessing)
    if layout == "nchw":
        raise ValueError(
            f"layout 'nchw' is for ONNX models; {source.path} is a Keras or SavedModel classifier, which takes nhwc "
            "images"
        )
    if source.kind == "saved_model":
        return _saved_model_classifier(source.path, **preprocessing)
    model = pretrained.load_keras(source.path)
    network = classifier_network(model)
    return Classifier(
        lambda x: model(x, training=False), network.input_shape, model.weights, network=network, **preprocessing
    )


def _saved_model_classifier(path: Path, **preprocessing: Any) -> Classifier:
    """The `serving_default` signature of a SavedModel; `preprocessing` are `Classifier`'s input_range, mean, std."""
    pretrained.saved_model_notice(path)
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no serving_default signature; it has {list(loaded.signatures)}")
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(f"SavedModel {path}: serving_default must take one image input; it takes {sorted(inputs)}")
    ((input_name, spec),) = inputs.items()
    output_name = pretrained.scores_output(list(signature.structured_outputs), f"SavedModel {path}: serving_default")
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
    output_name = pretrained.scores_output(outputs, f"ONNX model {path}")
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


def detect_layout(declared: Sequence[int | None], image_shape: Sequence[int]) -> str:
    """The axis order, "nhwc" or "nchw", in which a model's declared input shape takes images of `image_shape`.

    The declared shape is [batch, ...] (None: any size) and `image_shape` is (height, width, channels), so the
    order says where the model's channel axis is. Raises ValueError (one line) when both orders fit (e.g. every
    size unknown) or neither does.
    """
    fitting = [layout for layout in LAYOUTS[1:] if pretrained.fits(declared, _input_dims(image_shape, layout))]
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
    "nhwc" unless it says otherwise; `pretrained.check_input_shape`), that a
    `mean` or `std` has 1 value or one per channel, then classifies two
    images (`pretrained.check_scores`): cheap, so a wrong model fails before
    any attack runs.
    """
    images = np.asarray(images)
    layout = getattr(model, "layout", "nhwc")
    declared = getattr(model, "input_shape", None)
    if declared is not None:
        pretrained.check_input_shape(
            declared, _input_dims(images.shape[1:], layout), "model", "nchw" if layout == "nchw" else ""
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
    pretrained.check_scores(logits, len(sample), num_classes, "model")


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
