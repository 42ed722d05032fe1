"""One loader per kind of model file, shared by `trainers.evaluate` and fine-tuning (`--init_model`).

`load_source` loads what `sources.resolve` found by the loader of its kind, as a `LoadedModel`: `load_keras` for a
`.keras` file or a run folder's model.keras (in Keras' safe mode), `load_saved_model` for a SavedModel's
`serving_default` signature (a TensorFlow program, to be trusted as code: `saved_model_notice`), `load_onnx` for
an ONNX file (run by onnxruntime, without gradients). Evaluation wraps the result in its `Classifier`,
fine-tuning trains its `network`; both follow `rules`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from invariance_tf.model import classifier_network
from invariance_tf.model_files.rules import LAYOUTS, detect_layout, scores_output
from invariance_tf.model_files.sources import Source

SAVED_MODEL_NOTICE = (
    "note: {path} is a SavedModel, a TensorFlow program that may read or write files when run; "
    "load only SavedModels you would trust as code"
)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model file as loaded, before any input convention: `call(images)` gives its class scores.

    Attributes:
        call: images [batch, ...] in `layout` and in the owner's input convention -> class scores [batch, classes].
        input_shape: the declared input shape [batch, ...] in `layout` (None: any size).
        variables: what names the weights (`evaluation.fingerprint`): a Keras file's `weights`, a SavedModel's
            variables; none for an ONNX model.
        layout: "nhwc" or "nchw", the axis order the model takes.
        digest: for an ONNX model, the sha256 hex digest of its file; else None.
        network: the Keras network inside a Keras file or run folder (`classifier_network`); None for the others.
        trainable: the network fine-tuning trains: `network`, a SavedModel as a `keras.layers.TFSMLayer`
            model; None for an ONNX model.
    """

    call: Callable[[tf.Tensor], tf.Tensor]
    input_shape: tuple
    variables: Sequence[tf.Variable]
    layout: str = "nhwc"
    digest: str | None = None
    network: keras.Model | None = None
    trainable: keras.Model | None = None


def load_source(source: Source, layout: str = "auto", image_shape: Sequence[int] | None = None) -> LoadedModel:
    """The model file `source` names, loaded by the loader of its kind.

    Keras and SavedModel classifiers take "nhwc" images; an ONNX model "nhwc" or "nchw" ones, `layout="auto"`
    detecting which from its declared input shape and `image_shape`, the data's (height, width, channels).
    Raises ValueError (one line) for an unknown `layout`, or "nchw" for another kind than ONNX.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; valid layouts are {list(LAYOUTS)}")
    if source.kind == "onnx":
        return load_onnx(source.path, layout, image_shape)
    if layout == "nchw":
        raise ValueError(
            f"layout 'nchw' is for ONNX models; {source.path} is a Keras or SavedModel classifier, which takes nhwc "
            "images"
        )
    if source.kind == "saved_model":
        return load_saved_model(source.path)
    model = load_keras(source.path)
    network = classifier_network(model)
    return LoadedModel(
        lambda x: model(x, training=False), network.input_shape, model.weights, network=network, trainable=network
    )


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


def load_saved_model(path: Path) -> LoadedModel:
    """The `serving_default` signature of the SavedModel `path`: one image input, the `scores_output` out.

    It is loaded once, as a trainable `keras.layers.TFSMLayer` (which a fine-tuned run's model.keras then refers
    to by path) inside a Keras model of the signature's input shape; its computation keeps its own dtype. The
    variables that name it are those `tf.saved_model.load` gives, in its order.
    """
    saved_model_notice(path)
    layer, loaded = _serving_layer(path)
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"SavedModel {path} has no serving_default signature; it has {list(loaded.signatures)}")
    inputs = loaded.signatures["serving_default"].structured_input_signature[1]
    if len(inputs) != 1:
        raise ValueError(f"SavedModel {path}: serving_default must take one image input; it takes {sorted(inputs)}")
    ((_, spec),) = inputs.items()
    images = keras.Input(spec.shape[1:])
    outputs = layer(images)
    if isinstance(outputs, dict):
        outputs = outputs[scores_output(list(outputs), f"SavedModel {path}: serving_default")]
    network = keras.Model(images, outputs, name="saved_model_network")
    return LoadedModel(
        lambda x: network(x, training=False), tuple(spec.shape.as_list()), loaded.variables, trainable=network
    )


def _serving_layer(path: Path) -> tuple[keras.layers.Layer | None, Any]:
    """The SavedModel `path` as a `TFSMLayer` calling `serving_default`, and the object `tf.saved_model.load` gave.

    The layer is None when the SavedModel has no `serving_default` (then loaded again, to name what it has).
    """
    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default", trainable=True)
    except ValueError as error:
        if "serving_default" not in str(error):
            raise
        return None, tf.saved_model.load(str(path))
    return layer, layer._reloaded_obj  # noqa: SLF001 -- private (docs/development.md): what it loaded


def load_onnx(path: Path, layout: str = "auto", image_shape: Sequence[int] | None = None) -> LoadedModel:
    """An ONNX model (one float32 image input) run by onnxruntime on CPU, from tf.function via `tf.numpy_function`.

    It therefore has no gradients; its `digest` is that of the file's bytes. `layout="auto"` detects the axis
    order from the declared input shape and `image_shape`, the data's (height, width, channels).
    """
    session, errors = _onnx_session(path)
    inputs, outputs = session.get_inputs(), [output.name for output in session.get_outputs()]
    if len(inputs) != 1:
        raise ValueError(f"ONNX model {path} must take one image input; it takes {[i.name for i in inputs]}")
    output_name = scores_output(outputs, f"ONNX model {path}")
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
    return LoadedModel(logits, tuple(declared), [], layout=layout, digest=digest)


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
