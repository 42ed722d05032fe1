"""The `report` attack: how a classifier fails the grid, from the grid's own exhaustive pass.

Asking for it (`evaluate(..., attacks=["report"])`, `trainers.evaluate --attack=report`) runs clean, worst_of_k and
the grid first on the same images, the grid brute (every one of its transformations for every image, which the
per-image scores need) with the nested boxes of `grid.nested_boxes(limits)` and the comparison with the untransformed
image (`grid_accuracy(..., profile=True)`). Its accuracy is the grid's; its summary fields (`report_summary`):

- `clean_accuracy` and `worst_of_k_accuracy` on the same images;

- `per_class`: per class index, its examples and its clean and grid accuracy;
- `mean_invariance`: per image the share of the grid's transformations that keep the prediction it has
  untransformed, averaged over the images; `invariance_quartiles` their 25th, 50th and 75th percentiles;
- `mean_kl`: per image KL(f(x) || f(T x)) in nats averaged over the grid's transformations T (the KL penalty of
  training, measured at test time), averaged over the images;
- `boxes`: grid accuracy within each nested box, (largest |dx| = |dy| in pixels, largest |angle| in degrees);
- `worst_of_k_overestimate`: worst-of-k accuracy minus grid accuracy on the same images (a fraction): how far the
  cheaper attack overestimates this model's grid robustness.

`plots.failure_report` draws them (failure_report.png of `trainers.evaluate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from invariance_tf import transforms
from invariance_tf.evaluation.grid import nested_boxes
from invariance_tf.evaluation.result import Model, RobustResult

GRID_SETTINGS = {"method": "brute", "boxes": "nested", "profile": True}
"""The grid's arguments when the report is asked for (`Attack.fixes`)."""


@dataclasses.dataclass
class ReportResult(RobustResult):
    """The grid's `RobustResult` and what the report's summary reads beside it.

    Attributes:
        labels: int [N], the examples' labels.
        clean_correct: bool [N], the clean attack's outcome per example.
        worst_of_k_correct: bool [N], the worst_of_k attack's outcome per example.
        boxes: the nested boxes of `box_correct`'s columns, (|dx|, |dy|, |angle|) limits.
    """

    labels: np.ndarray | None = None
    clean_correct: np.ndarray | None = None
    worst_of_k_correct: np.ndarray | None = None
    boxes: tuple[tuple[float, float, float], ...] = ()


def failure_report(
    model: Model,
    images: np.ndarray,
    labels: np.ndarray,
    grid: RobustResult,
    worst_of_k: RobustResult,
    clean: RobustResult,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
) -> ReportResult:
    """The grid's result on these examples, with what the summary reads beside it; no model call.

    That is the labels, the clean and worst-of-k outcomes and the nested boxes within `limits` (dx, dy pixels,
    angle degrees) that the grid graded.
    """
    del model, images
    return ReportResult(
        **vars(grid),
        labels=np.asarray(labels),
        clean_correct=clean.correct,
        worst_of_k_correct=worst_of_k.correct,
        boxes=nested_boxes(limits),
    )


def per_class(labels: np.ndarray, clean: np.ndarray, grid: np.ndarray) -> list[dict[str, Any]]:
    """Per class index present in `labels` (ascending): its examples, clean and grid accuracy."""
    return [
        {
            "label": int(label),
            "examples": int((labels == label).sum()),
            "clean": float(clean[labels == label].mean()),
            "grid": float(grid[labels == label].mean()),
        }
        for label in np.unique(labels)
    ]


def report_summary(results: Mapping[str, RobustResult], seconds: Mapping[str, float]) -> dict[str, Any]:
    """The report's own summary fields (see the module docstring), from its result."""
    del seconds
    result = results["report"]
    return {
        "clean_accuracy": float(result.clean_correct.mean()),
        "worst_of_k_accuracy": float(result.worst_of_k_correct.mean()),
        "per_class": per_class(result.labels, result.clean_correct, result.correct),
        "mean_invariance": float(result.invariance.mean()),
        "invariance_quartiles": [float(q) for q in np.percentile(result.invariance, [25, 50, 75])],
        "mean_kl": float(result.mean_kl.mean()),
        "boxes": [
            {"shift": box[0], "angle": box[2], "accuracy": float(accuracy)}
            for box, accuracy in zip(result.boxes, result.box_correct.mean(axis=0))
        ],
        "worst_of_k_overestimate": float(result.worst_of_k_correct.mean() - result.correct.mean()),
    }


def describe_report(entry: Mapping[str, Any]) -> str:
    """One sentence on a report summary entry: invariance, KL and what worst-of-k misses."""
    return (
        f"report: the prediction survives {100 * entry['mean_invariance']:.1f} % of the grid per image on average "
        f"(mean KL {entry['mean_kl']:.3f} nats); worst-of-k overestimates grid accuracy by "
        f"{100 * entry['worst_of_k_overestimate']:.1f} points"
    )
