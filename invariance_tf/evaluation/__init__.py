"""Robust accuracy under the spatial transformations of `invariance_tf.transforms`.

An example counts as correct under a set of transformations only if the
model's argmax is its label for every one of them (`result`). Every attack
takes a model (a Keras model or any callable `model(images, training=False)`
returning logits), raw images (pixel values in [0, 255], any real or integer
dtype, [N, H, W, C]) and integer labels [N], and classifies (image,
transformation) pairs in batches of `batch_size` pairs (None:
`default_batch_size()`) inside one tf.function (`pairs`). Transformations are
`(dx, dy, angle)` rows: pixels right, pixels down, degrees counter-clockwise
(see `invariance_tf.transforms`).

One concept per module:

- `result`: `RobustResult`, what every attack returns; correct and margin.
- `pairs`: the batching engine the attacks share, and their common argument checks.
- `clean`, `worst_of_k`, `spgd`, `grid`, `refined`: one attack each, named as in `ATTACKS`.
- `attacks`: the registry `ATTACKS` of the attacks by name (`Attack`), each with its own options (`Option`),
  their checks and its own summary fields.
- `chunks`: running an attack by name (`run_attack`), chunk by chunk resumable (`resumable`).
- `suite`: `evaluate(classifier, (images, labels), attacks=...)`, the library call: the attacks named, in one
  result schema (`Evaluation`).
- `classifiers`: classifiers from disk (`load_classifier`), `check_classifier`, `fingerprint`, `model_key`.
- `symmetry`: how far a network's logits move under exact quarter-turns and flips.

Not re-exported here, as they read `invariance_tf.data` (and so import TFDS) or plot:

- `final_metrics`: the final metrics of a `trainers.fit` run (`robust_metrics`, `training_regime`), by `evaluate`.
- `options`: `EvaluateOptions`, the flags of `trainers.evaluate` and their checks.
- `reporting`: what `trainers.evaluate` does (`run`): a classifier from disk evaluated, and its report written.
"""

from invariance_tf.evaluation.attacks import ATTACKS, Attack, Option
from invariance_tf.evaluation.chunks import resumable, run_attack
from invariance_tf.evaluation.classifiers import (
    LAYOUTS,
    Classifier,
    check_classifier,
    fingerprint,
    load_classifier,
    model_key,
)
from invariance_tf.evaluation.clean import clean_accuracy, clean_result
from invariance_tf.evaluation.grid import METHODS, NESTED_BOXES, grid_accuracy, nested_boxes
from invariance_tf.evaluation.pairs import DEFAULT_SEED, default_batch_size
from invariance_tf.evaluation.refined import refine
from invariance_tf.evaluation.result import Model, RobustResult
from invariance_tf.evaluation.spgd import spgd_accuracy
from invariance_tf.evaluation.suite import Evaluation, evaluate
from invariance_tf.evaluation.worst_of_k import worst_of_k_accuracy
from invariance_tf.layers.input_convention import INPUT_RANGES

__all__ = [
    "ATTACKS",
    "Attack",
    "Classifier",
    "DEFAULT_SEED",
    "Evaluation",
    "INPUT_RANGES",
    "LAYOUTS",
    "METHODS",
    "NESTED_BOXES",
    "Model",
    "Option",
    "RobustResult",
    "check_classifier",
    "clean_accuracy",
    "clean_result",
    "default_batch_size",
    "evaluate",
    "fingerprint",
    "grid_accuracy",
    "load_classifier",
    "nested_boxes",
    "model_key",
    "refine",
    "resumable",
    "run_attack",
    "spgd_accuracy",
    "worst_of_k_accuracy",
]
