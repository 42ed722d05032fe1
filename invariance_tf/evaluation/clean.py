"""The clean attack: the untransformed images, so reports list which examples are wrong before any transformation."""

from __future__ import annotations

import numpy as np

from invariance_tf.evaluation.pairs import PairEvaluator, check_inputs
from invariance_tf.evaluation.result import Model, RobustResult


def clean_result(model: Model, images, labels, batch_size: int | None = None) -> RobustResult:
    """Per-example outcome on the untransformed images.

    `worst_transform` is the identity (0, 0, 0), `margin` its margin.
    """
    images, labels, batch_size = check_inputs(images, labels, batch_size)
    evaluator = PairEvaluator(model, images, labels, np.zeros((1, 3), np.float32), batch_size)
    evaluator(np.arange(len(images)), np.zeros(len(images), np.int64))
    return evaluator.result()


def clean_accuracy(model: Model, images, labels, batch_size: int | None = None) -> float:
    """Accuracy on the untransformed images (`clean_result`'s accuracy), for callers that want only the number."""
    return clean_result(model, images, labels, batch_size).accuracy
