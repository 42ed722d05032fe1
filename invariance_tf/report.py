"""Reports of a robust evaluation: confidence intervals and CSV tables.

Transformations are `(dx, dy, angle)`: pixels right, pixels down, degrees
counter-clockwise (see `invariance_tf.transforms`). A margin is the
true-class logit minus the largest other logit (negative: misclassified).
"""

from __future__ import annotations

import csv
import fractions
import hashlib
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from invariance_tf import files, transforms
from invariance_tf.evaluation.result import RobustResult


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (accuracy on a random subset of examples).

    Unlike the normal approximation it stays inside [0, 1] and is sensible
    at accuracies near 0 or 1, where robust accuracies often are.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1; got successes={successes}, trials={trials}")
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


def bits(correct: np.ndarray) -> str:
    """Per-example outcomes as a string of "0" and "1", compact in JSON records; `from_bits` reads it back."""
    return "".join("1" if value else "0" for value in np.asarray(correct, bool))


def from_bits(text: str) -> np.ndarray:
    """The bool array `bits` wrote."""
    if set(text) - {"0", "1"}:
        raise ValueError(f"per-example outcomes must be a string of 0 and 1; got {text[:40]!r}")
    return np.frombuffer(text.encode(), np.uint8) == ord("1")


def image_set(positions: np.ndarray, total: int, split: str = "test") -> dict:
    """The record of which images of `split` were graded: a metrics.json entry that lets pairs be checked.

    Args:
        positions: the graded images' positions in the whole split, in loader order (`data.subset_indices`).
        total: the number of images in the whole split.
        split: the split's name.

    Returns:
        `{"split", "count", "of", "sha256", "indices"}`: `indices` is "all" for the whole split in order, else the
        positions comma-separated; `sha256` is the digest of that text, so two records graded the same images
        exactly when their digests agree.
    """
    positions = np.asarray(positions, np.int64)
    whole = len(positions) == total and bool(np.all(positions == np.arange(total)))
    indices = "all" if whole else ",".join(str(int(position)) for position in positions)
    return {
        "split": split,
        "count": int(len(positions)),
        "of": int(total),
        "sha256": hashlib.sha256(indices.encode()).hexdigest(),
        "indices": indices,
    }


def image_positions(record: Mapping) -> np.ndarray:
    """The positions an `image_set` record lists."""
    if record["indices"] == "all":
        return np.arange(record["of"])
    return np.asarray([int(position) for position in record["indices"].split(",")], np.int64)


def check_paired(metrics_a: Mapping, metrics_b: Mapping, names: tuple[str, str] = ("a", "b")) -> None:
    """Refuses, with one line, to pair two runs' grid outcomes unless they graded the same images.

    Records that name their graded images (`grid_images`, an `image_set`) must name the same ones; older records,
    which do not, must at least have as many outcomes.
    """
    records = [metrics.get("grid_images") for metrics in (metrics_a, metrics_b)]
    if None not in records and records[0]["sha256"] != records[1]["sha256"]:
        raise ValueError(
            f"cannot pair {names[0]} and {names[1]}: they graded different test images (grid_images sha256 "
            f"{records[0]['sha256'][:12]} vs {records[1]['sha256'][:12]})"
        )
    lengths = [len(metrics["grid_correct"]) for metrics in (metrics_a, metrics_b)]
    if lengths[0] != lengths[1]:
        raise ValueError(
            f"cannot pair {names[0]} and {names[1]}: they graded {lengths[0]} and {lengths[1]} test images"
        )


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> dict:
    """Accuracy of b minus that of a on the same examples, with a paired bootstrap interval and McNemar's exact test.

    Pairing matters: two models graded on the same images err on many of the
    same ones, so the difference's interval is far tighter than two unpaired
    intervals. The bootstrap resamples examples (both outcomes together);
    McNemar's p-value is the two-sided binomial test on the discordant
    examples (b right where a is wrong, and the reverse).

    Returns a dict: `difference`, `ci` (low, high), `b_only` and `a_only`
    (discordant counts), `mcnemar_p`, `examples`.
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equally long, non-empty 1-D outcome arrays; got shapes {a.shape} and {b.shape}")
    delta = b.astype(np.float64) - a.astype(np.float64)
    low, high = bootstrap_interval(delta, confidence, resamples, seed)
    b_only, a_only = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    return {
        "difference": float(delta.mean()),
        "ci": [float(low), float(high)],
        "b_only": b_only,
        "a_only": a_only,
        "mcnemar_p": _mcnemar_exact(b_only, a_only),
        "examples": int(len(a)),
    }


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example `values`, resampling examples.

    With `values` the per-example difference of two differences, (d_i − c_i) − (b_i − a_i) over the same
    examples, it is the interval of an interaction: how much a change moves the gap between two models.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or not len(values):
        raise ValueError(f"need a non-empty 1-D array of per-example values; got shape {values.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(int(resamples))])
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _mcnemar_exact(b_only: int, a_only: int) -> float:
    """Two-sided exact McNemar p-value: P(a Binomial(n, 1/2) count at least as far from n/2 as observed)."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    k = min(b_only, a_only)
    tail = fractions.Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(fractions.Fraction(1), 2 * tail))


def write_examples_csv(
    path: str | Path, labels: np.ndarray, results: Mapping[str, RobustResult], names: Sequence[str]
) -> None:
    """One row per example: its index, its image's name (`data.load_names`) and label, then per-attack outcomes.

    Per attack: whether it is correct, its worst (dx, dy, angle) and margin.
    """
    labels = np.asarray(labels)
    if len(names) != len(labels):
        raise ValueError(f"names has {len(names)} entries; labels has {len(labels)}")
    for name, result in results.items():
        if len(result.correct) != len(labels):
            raise ValueError(f"result {name!r} has {len(result.correct)} examples; labels has {len(labels)}")
    header = ["example", "image", "label"]
    for name in results:
        header += [f"{name}_correct", f"{name}_dx", f"{name}_dy", f"{name}_angle", f"{name}_margin"]
    with files.atomic_path(path) as partial, open(partial, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for index, (image, label) in enumerate(zip(names, labels)):
            row = [index, image, int(label)]
            for result in results.values():
                margin = "" if result.margin is None else f"{result.margin[index]:.6g}"
                row += [int(result.correct[index]), *(f"{v:.6g}" for v in result.worst_transform[index]), margin]
            writer.writerow(row)


def worst_failures(correct: np.ndarray, margin: np.ndarray, count: int) -> np.ndarray:
    """Indices of the (at most) `count` incorrect examples with the most negative margins, most negative first.

    Correct examples are never picked, whatever their margin; equal margins keep example order.
    """
    correct, margin = np.asarray(correct, bool), np.asarray(margin, np.float64)
    if correct.shape != margin.shape or correct.ndim != 1:
        raise ValueError(
            f"correct and margin must be equally long vectors; got shapes {correct.shape} and {margin.shape}"
        )
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}")
    failures = np.flatnonzero(~correct)
    return failures[np.argsort(margin[failures], kind="stable")[:count]]


def write_per_angle_csv(
    path: str | Path,
    per_transform_accuracy: np.ndarray,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
) -> None:
    """Accuracy at each grid angle, the mean over the grid's translations: columns angle, accuracy."""
    _, _, angles = transforms.grid_axes(limits, granularity)
    accuracy = transforms.per_angle_accuracy(per_transform_accuracy, granularity)
    _write_rows(path, ["angle", "accuracy"], zip(angles, accuracy))


def write_per_shift_csv(
    path: str | Path,
    per_transform_accuracy: np.ndarray,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
) -> None:
    """Accuracy at each grid translation, the mean over the grid's angles: columns dx, dy, accuracy."""
    dxs, dys, _ = transforms.grid_axes(limits, granularity)
    accuracy = transforms.per_shift_accuracy(per_transform_accuracy, granularity)
    _write_rows(
        path,
        ["dx", "dy", "accuracy"],
        ((dx, dy, accuracy[i, j]) for i, dx in enumerate(dxs) for j, dy in enumerate(dys)),
    )


def _write_rows(path: str | Path, header: Sequence[str], rows) -> None:
    with files.atomic_path(path) as partial, open(partial, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows([f"{value:.6g}" for value in row] for row in rows)
