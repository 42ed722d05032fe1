"""The refined attack: S-PGD on the margin in the continuous box, from each grid survivor's weakest grid points.

It measures how much the grid overestimates robustness: transformations between the grid's points that break
examples the grid calls robust.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from invariance_tf import transforms
from invariance_tf.evaluation.pairs import check_inputs, in_fixed_batches, traced
from invariance_tf.evaluation.result import Model, RobustResult, correct_and_margin


@traced
def _margin_gradient_fn(model: Model) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """A tf.function: per pair (images[i], params[p]) whether it is correct, its margin and d margin / d params."""

    @tf.function(reduce_retracing=True)
    def margin_and_gradient(images, labels, image_index, params, resampling):
        picked = tf.cast(tf.gather(images, image_index), tf.float32)
        labels = tf.gather(labels, image_index)
        with tf.GradientTape() as tape:
            tape.watch(params)
            moved = transforms.transform_xla(picked, params, resampling)
            correct, margin = correct_and_margin(model(moved, training=False), labels)
        return correct, margin, tape.gradient(margin, params)

    return margin_and_gradient


def refine(
    model: Model,
    images,
    labels,
    grid: RobustResult,
    steps: int = 10,
    step_size: Sequence[float] | None = None,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
    batch_size: int | None = None,
    resampling: str = transforms.EVALUATION_RESAMPLING,
) -> RobustResult:
    """A stronger attack than the grid: S-PGD on the margin in the continuous box, from the grid's weakest points.

    Every example that survives `grid` (a `grid_accuracy` result, with
    `keep_lowest=m` for m starts per example) gets m searches, one from each of its m lowest-margin
    grid transformations: `steps` steps of projected sign-gradient descent
    on the margin (true logit minus the largest other), `step_size` per
    coordinate (dx px, dy px, angle deg; default a quarter of the grid
    spacing), projected onto `[-limits, limits]`. A search stops at its
    first misclassification (the early-exit economy: examples the grid
    already breaks are never searched). The result's `correct` is the grid's
    and-ed with the searches', so its accuracy never exceeds the grid's;
    `worst_transform` and `margin` are the lowest-margin point of grid and
    searches; `evaluations` counts the searches' gradient steps (the grid's
    pairs are in `grid.evaluations`).
    """
    images, labels, batch_size = check_inputs(images, labels, batch_size)
    if len(grid.correct) != len(images):
        raise ValueError(
            f"grid must be a grid_accuracy result on these {len(images)} images; "
            f"got one on {len(grid.correct)} examples"
        )
    if grid.margin is None:
        raise ValueError("grid must be a grid_accuracy result with per-example margins; this one has none")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    limits = transforms.validate_limits(limits)
    transforms.validate_resampling(resampling)
    step = _refine_step_size(step_size, limits, granularity)
    survivors = np.flatnonzero(grid.correct)
    lowest = grid.worst_transform[:, None] if grid.lowest_transforms is None else grid.lowest_transforms
    starts = lowest[survivors]
    image_index = np.repeat(survivors, starts.shape[1]).astype(np.int32)
    params = starts.reshape(-1, 3).astype(np.float32)
    correct, margin, worst = grid.correct.copy(), grid.margin.copy(), grid.worst_transform.copy()
    search = _margin_gradient_fn(model)
    images_t, labels_t = tf.convert_to_tensor(images), tf.convert_to_tensor(labels, tf.int32)
    evaluations = 0
    for _ in range(int(steps) + 1):
        active = np.flatnonzero(correct[image_index])
        if not active.size:
            break
        pair_correct, pair_margin, gradient = in_fixed_batches(
            lambda index, points: search(images_t, labels_t, index, tf.constant(points), resampling),
            batch_size,
            image_index[active].astype(np.int32),
            params[active].astype(np.float32),
        )
        evaluations += active.size
        _keep_lowest_margin(image_index[active], params[active], pair_correct, pair_margin, correct, margin, worst)
        params[active] = np.clip(params[active] - step * np.sign(gradient), -np.asarray(limits), limits)
    return RobustResult(
        accuracy=float(correct.mean()), correct=correct, worst_transform=worst, evaluations=evaluations, margin=margin
    )


def _refine_step_size(
    step_size: Sequence[float] | None, limits: tuple[float, float, float], granularity: Sequence[int]
) -> np.ndarray:
    """`step_size` as float32 [3], by default a quarter of the grid spacing (the limit where an axis has 1 point)."""
    if step_size is None:
        spacing = [2 * limit / (g - 1) if g > 1 else limit for limit, g in zip(limits, granularity)]
        return np.asarray(spacing, np.float32) / 4
    step = np.asarray(step_size, np.float32)
    if step.shape != (3,) or np.any(step < 0):
        raise ValueError(f"step_size must be 3 values >= 0 (dx px, dy px, angle deg); got {step_size!r}")
    return step


def _keep_lowest_margin(image_index, params, pair_correct, pair_margin, correct, margin, worst) -> None:
    """Updates per-example `correct`, lowest `margin` and its transformation `worst` in place with new pairs."""
    correct[image_index[~pair_correct]] = False
    order = np.lexsort((pair_margin, image_index))
    images, first = np.unique(image_index[order], return_index=True)
    lowest = order[first]
    lower = pair_margin[lowest] < margin[images]
    margin[images[lower]] = pair_margin[lowest[lower]]
    worst[images[lower]] = params[lowest[lower]]
