"""Reports of a robust evaluation: confidence intervals and CSV tables.

Transformations are `(dx, dy, angle)`: pixels right, pixels down, degrees
counter-clockwise (see `invariance_tf.transforms`). A margin is the
true-class logit minus the largest other logit (negative: misclassified).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from invariance_tf import files, plots, transforms
from invariance_tf.evaluation import RobustResult


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (accuracy on a random subset of examples).

    Unlike the normal approximation it stays inside [0, 1] and is sensible
    at accuracies near 0 or 1, where robust accuracies often are.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1; got successes={successes}, "
                         f"trials={trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == trials else centre + half
    return low, high


def write_examples_csv(path: str | Path, labels: np.ndarray, results: Mapping[str, RobustResult]) -> None:
    """One row per example: its label, then per attack whether it is correct, its worst (dx, dy, angle) and margin."""
    labels = np.asarray(labels)
    for name, result in results.items():
        if len(result.correct) != len(labels):
            raise ValueError(f"result {name!r} has {len(result.correct)} examples; labels has {len(labels)}")
    header = ["example", "label"]
    for name in results:
        header += [f"{name}_correct", f"{name}_dx", f"{name}_dy", f"{name}_angle", f"{name}_margin"]
    with files.atomic_path(path) as partial, open(partial, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for index, label in enumerate(labels):
            row = [index, int(label)]
            for result in results.values():
                margin = "" if result.margin is None else f"{result.margin[index]:.6g}"
                row += [int(result.correct[index]), *(f"{v:.6g}" for v in result.worst_transform[index]), margin]
            writer.writerow(row)


def write_per_angle_csv(path: str | Path, per_transform_accuracy: np.ndarray,
                        limits: Sequence[float] = transforms.DEFAULT_LIMITS,
                        granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY) -> None:
    """Accuracy at each grid angle, the mean over the grid's translations: columns angle, accuracy."""
    _, _, angles = plots.grid_axes(limits, granularity)
    accuracy = plots.per_angle_accuracy(per_transform_accuracy, granularity)
    _write_rows(path, ["angle", "accuracy"], zip(angles, accuracy))


def write_per_shift_csv(path: str | Path, per_transform_accuracy: np.ndarray,
                        limits: Sequence[float] = transforms.DEFAULT_LIMITS,
                        granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY) -> None:
    """Accuracy at each grid translation, the mean over the grid's angles: columns dx, dy, accuracy."""
    dxs, dys, _ = plots.grid_axes(limits, granularity)
    accuracy = plots.per_shift_accuracy(per_transform_accuracy, granularity)
    _write_rows(path, ["dx", "dy", "accuracy"],
                ((dx, dy, accuracy[i, j]) for i, dx in enumerate(dxs) for j, dy in enumerate(dys)))


def _write_rows(path: str | Path, header: Sequence[str], rows) -> None:
    with files.atomic_path(path) as partial, open(partial, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([f"{value:.6g}" for value in row] for row in rows)
