"""The refined attack: S-PGD on the margin in the continuous box, from each grid survivor's weakest grid points.

It measures how much the grid overestimates robustness: transformations between the grid's points that break
examples the grid calls robust.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from invariance_tf import transforms
from invariance_tf.evaluation.pairs import Tally, check_inputs, in_fixed_batches, traced
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
    _check_grid(grid, len(images))
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    limits = transforms.validate_limits(limits)
    transforms.validate_resampling(resampling)
    step = _refine_step_size(step_size, limits, granularity)
    image_index, params = _search_starts(grid)
    tally = Tally(grid.correct.copy(), grid.margin[:, None].copy(), grid.worst_transform[:, None].copy())
    search = _margin_gradient_fn(model)
    images_t, labels_t = tf.convert_to_tensor(images), tf.convert_to_tensor(labels, tf.int32)
    for _ in range(int(steps) + 1):
        active = np.flatnonzero(tally.correct[image_index])
        if not active.size:
            break
        pair_correct, pair_margin, gradient = in_fixed_batches(
            lambda index, points: search(images_t, labels_t, index, tf.constant(points), resampling),
            batch_size,
            image_index[active].astype(np.int32),
            params[active].astype(np.float32),
        )
        tally.add(image_index[active], params[active], pair_correct, pair_margin)
        params[active] = np.clip(params[active] - step * np.sign(gradient), -np.asarray(limits), limits)
    return RobustResult(
        accuracy=float(tally.correct.mean()),
        correct=tally.correct,
        worst_transform=tally.worst[:, 0],
        evaluations=tally.evaluations,
        margin=tally.margin[:, 0],
    )


def _check_grid(grid: RobustResult, num_images: int) -> None:
    """Raises ValueError (one line) unless `grid` is a result with margins on `num_images` examples."""
    if len(grid.correct) != num_images:
        raise ValueError(
            f"grid must be a grid_accuracy result on these {num_images} images; got one on {len(grid.correct)} examples"
        )
    if grid.margin is None:
        raise ValueError("grid must be a grid_accuracy result with per-example margins; this one has none")


def _search_starts(grid: RobustResult) -> tuple[np.ndarray, np.ndarray]:
    """The searches: per grid survivor, one from each of its lowest-margin grid points, as (image index, point)."""
    survivors = np.flatnonzero(grid.correct)
    lowest = grid.worst_transform[:, None] if grid.lowest_transforms is None else grid.lowest_transforms
    starts = lowest[survivors]
    image_index = np.repeat(survivors, starts.shape[1]).astype(np.int32)
    return image_index, starts.reshape(-1, 3).astype(np.float32)


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


def refinement_summary(results: Mapping[str, RobustResult], seconds: Mapping[str, float]) -> dict[str, Any]:
    """The refined attack's own summary fields: how much the grid (its input) overestimates robustness.

    `grid_accuracy`, `grid_overestimate` (grid minus refined accuracy, a fraction), `broken_beyond_grid` (grid
    survivors the searches break) and `seconds_with_grid` (both attacks' seconds).
    """
    grid, refined = results["grid"], results["refined"]
    return {
        "grid_accuracy": grid.accuracy,
        "grid_overestimate": grid.accuracy - refined.accuracy,
        "broken_beyond_grid": int((grid.correct & ~refined.correct).sum()),
        "seconds_with_grid": seconds["grid"] + seconds["refined"],
    }


def describe_refinement(entry: Mapping[str, Any]) -> str:
    """One sentence on a refined summary entry (`refinement_summary`'s fields): what the grid missed."""
    survivors = round(entry["grid_accuracy"] * entry["examples"])
    return (
        f"refined: {entry['broken_beyond_grid']} of the {survivors} grid survivors break in the continuous "
        f"box; grid accuracy overestimates robustness by {100 * entry['grid_overestimate']:.2f} points"
    )
