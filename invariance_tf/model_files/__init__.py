"""Trained classifiers from disk: the kinds, one loader per kind, and the rules they all follow, stated once.

Shared by `trainers.evaluate` (`evaluation.load_classifier`, which wraps a loaded model as a `Classifier`) and
fine-tuning (`--init_model`, `networks.pretrained.trainable_network`, which trains it):

- `sources`: the kinds (`resolve`: a `trainers.fit` run folder, a `.keras` file, a SavedModel folder, an `.onnx`
  file) and the input convention their owners wrote them for (`ConventionOptions`, the flags `--input_range`,
  `--mean`, `--std`; a run folder's recorded one, `Source.convention`).
- `loaders`: `load_source`, by kind: `load_keras` (Keras' safe mode), `load_saved_model` (its `serving_default`
  signature as a `keras.layers.TFSMLayer`, a program to be trusted as code: `saved_model_notice`), `load_onnx`
  (onnxruntime, no gradients); each gives a `LoadedModel`.
- `rules`: the input shape (`check_input_shape`, an ONNX model's `detect_layout`), the class scores
  (`scores_output`, `check_scores`: float [batch, classes]; `float32_logits`), probabilities refused
  (`refuse_probabilities`). The pixel convention itself is `layers.InputConvention`.
"""

from invariance_tf.model_files.loaders import (
    LoadedModel,
    load_keras,
    load_onnx,
    load_saved_model,
    load_source,
    saved_model_notice,
)
from invariance_tf.model_files.rules import (
    LAYOUTS,
    check_input_shape,
    check_scores,
    detect_layout,
    fits,
    float32_logits,
    input_dims,
    refuse_probabilities,
    scores_output,
)
from invariance_tf.model_files.sources import KINDS, ConventionOptions, Source, recorded_convention, resolve

__all__ = [
    "KINDS",
    "LAYOUTS",
    "ConventionOptions",
    "LoadedModel",
    "Source",
    "check_input_shape",
    "check_scores",
    "detect_layout",
    "fits",
    "float32_logits",
    "input_dims",
    "load_keras",
    "load_onnx",
    "load_saved_model",
    "load_source",
    "recorded_convention",
    "refuse_probabilities",
    "resolve",
    "saved_model_notice",
    "scores_output",
]
