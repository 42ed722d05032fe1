"""What a robust evaluation returns, and the two per-example quantities it is built on: correct and margin.

An example counts as correct under a set of transformations only if the
model's argmax is its label for every one of them. The *margin* of a
classification is the true-class logit minus the largest other logit; the
most damaging transformation of an example is the one with the lowest margin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from invariance_tf.model_files.rules import float32_logits

# What every attack evaluates: a Keras model or any callable `model(images, training=False)` returning logits.
Model = Callable[..., tf.Tensor]


@dataclasses.dataclass
class RobustResult:
    """Outcome of a robust evaluation of N examples.

    Attributes:
        accuracy: fraction of examples correct under every transformation evaluated.
        correct: bool [N], whether each example is correct under all of them.
        worst_transform: float32 [N, 3], per example the evaluated transformation
            with the lowest margin (dx pixels, dy pixels, angle degrees).
        per_transform_accuracy: float [T], the accuracy under each grid
            transformation, in `transforms.grid` order; only `grid_accuracy`
            with `method="brute"` computes it, otherwise None.
        evaluations: number of (image, transformation) pairs classified,
            excluding the padding of the last batch (a gradient step of
            `refine` counts as one).
        margin: float32 [N], the margin at `worst_transform` (negative: misclassified).
        lowest_transforms: float32 [N, m, 3], per example the m evaluated
            transformations with the lowest margins, lowest first; only
            `grid_accuracy` with `keep_lowest=m > 1` keeps them, otherwise None.
        box_correct: bool [N, B], whether each example is correct under every
            transformation inside each of the B boxes `grid_accuracy` was given
            (`boxes`); otherwise None.
        invariance: float32 [N], the share of the grid's transformations under
            which the argmax is the argmax on the untransformed image (1: the
            prediction never changes); only `grid_accuracy` with `profile=True`.
        mean_kl: float32 [N], KL(f(x) || f(T x)) in nats (softmax of the
            logits), averaged over the grid's transformations T: the KL penalty
            of training, measured at test time; only with `profile=True`.
        resumed_examples: examples whose results `resumable` read from its
            state folder instead of evaluating them.
    """

    accuracy: float
    correct: np.ndarray
    worst_transform: np.ndarray
    per_transform_accuracy: np.ndarray | None = None
    evaluations: int = 0
    margin: np.ndarray | None = None
    lowest_transforms: np.ndarray | None = None
    box_correct: np.ndarray | None = None
    invariance: np.ndarray | None = None
    mean_kl: np.ndarray | None = None
    resumed_examples: int = 0


def correct_and_margin(logits: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per example: whether the argmax is the label, and the margin (true logit minus the largest other)."""
    logits = float32_logits(logits)
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    is_label = tf.one_hot(labels, tf.shape(logits)[-1], on_value=True, off_value=False)
    other = tf.reduce_max(tf.where(is_label, float("-inf"), logits), axis=-1)
    return correct, tf.gather(logits, labels, batch_dims=1) - other
