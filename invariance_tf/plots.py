"""Figures of spatial robustness, each written as a PNG.

They are the grid attack's landscape, accuracy per angle, cost against robustness, the λ search, a contact
sheet of the worst failures, and the report attack's view of how a model fails.

Every function takes numpy arrays and an output path and writes a PNG with
matplotlib's Agg canvas (no display and no pyplot state, so it works on
headless machines and inside tests). A *per-transform accuracy* vector is
`evaluation.grid_accuracy(..., method="brute").per_transform_accuracy`: one
accuracy per transformation of `transforms.grid(limits, granularity)`, in that
order (dx slowest, angle fastest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from invariance_tf import transforms

DPI = 120
FAILURE_COLUMNS = 4
FAILURE_TILE_INCHES = (2.8, 2.0)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)


def robustness_landscape(
    per_transform_accuracy: np.ndarray,
    path: str | Path,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
    title: str = "",
) -> None:
    """Writes heatmaps of accuracy over angle x dx and angle x dy, and the accuracy per angle, side by side.

    Shows where on the grid a model fails: a standard model's accuracy falls
    off towards the corners, a robust model's stays flat.
    """
    dxs, dys, angles = transforms.grid_axes(limits, granularity)
    by_dx, by_dy = transforms.angle_translation_maps(per_transform_accuracy, granularity)
    figure = _new_figure(14, 3.8)
    panels = figure.subplots(1, 3)
    image = None
    for axes, values, shifts, name in ((panels[0], by_dx, dxs, "dx"), (panels[1], by_dy, dys, "dy")):
        image = axes.imshow(
            values, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, extent=_extent(angles, shifts)
        )
        axes.set_xlabel("angle (degrees, counter-clockwise)")
        axes.set_ylabel(f"{name} (pixels)")
        axes.set_title(f"accuracy over angle x {name} (mean over {'dy' if name == 'dx' else 'dx'})")
    figure.colorbar(image, ax=panels[:2], label="accuracy", shrink=0.9)
    _plot_per_angle(panels[2], {"": per_transform_accuracy}, angles, granularity)
    panels[2].set_title("accuracy per angle (mean over translations)")
    if title:
        figure.suptitle(title)
    _save(figure, path)


def _extent(columns: np.ndarray, rows: np.ndarray) -> tuple[float, float, float, float]:
    """The `imshow` extent putting each cell's centre on its grid value."""

    def edges(values: np.ndarray) -> tuple[float, float]:
        half = (values[1] - values[0]) / 2 if len(values) > 1 else 0.5
        return float(values[0] - half), float(values[-1] + half)

    return (*edges(columns), *edges(rows))


def _plot_per_angle(
    axes: Axes, curves: Mapping[str, np.ndarray], angles: np.ndarray, granularity: Sequence[int]
) -> None:
    for index, (label, per_transform) in enumerate(curves.items()):
        axes.plot(
            angles,
            transforms.per_angle_accuracy(per_transform, granularity),
            "o-",
            markersize=3,
            color=f"C{index}",
            label=label or None,
        )
    axes.set_xlabel("angle (degrees, counter-clockwise)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0.0, 1.0)
    axes.grid(alpha=0.3)


def per_angle_curves(
    curves: Mapping[str, np.ndarray],
    path: str | Path,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    granularity: Sequence[int] = transforms.DEFAULT_GRANULARITY,
    title: str = "",
) -> None:
    """Writes one curve of accuracy per angle (mean over translations) for each labelled per-transform vector."""
    if not curves:
        raise ValueError("curves is empty; need at least one labelled per_transform_accuracy vector")
    _, _, angles = transforms.grid_axes(limits, granularity)
    figure = _new_figure(7.5, 4.5)
    axes = figure.add_subplot()
    _plot_per_angle(axes, curves, angles, granularity)
    axes.legend(fontsize="small")
    axes.set_title(title or "accuracy per angle (mean over translations)")
    _save(figure, path)


def cost_vs_robustness(
    labels: Sequence[str],
    train_seconds: np.ndarray,
    grid_accuracy: np.ndarray,
    path: str | Path,
    groups: Sequence[str] | None = None,
    title: str = "",
) -> None:
    """Writes grid accuracy against training time, one labelled marker per run, one colour per group."""
    seconds = np.asarray(train_seconds, np.float64)
    accuracy = np.asarray(grid_accuracy, np.float64)
    groups = list(labels) if groups is None else list(groups)
    if not len(labels) == len(seconds) == len(accuracy) == len(groups) or not len(labels):
        raise ValueError(
            f"labels, train_seconds, grid_accuracy and groups must have one equal, non-zero length; "
            f"got {len(labels)}, {len(seconds)}, {len(accuracy)}, {len(groups)}"
        )
    figure = _new_figure(7.5, 5)
    axes = figure.add_subplot()
    for index, group in enumerate(dict.fromkeys(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        axes.plot(seconds[members], accuracy[members], "o", markersize=7, color=f"C{index}", label=group)
    for label, x, y in zip(labels, seconds, accuracy):
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize="small")
    axes.margins(x=0.2, y=0.1)
    axes.set_xlabel("training time (seconds)")
    axes.set_ylabel("grid accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    _save(figure, path)


def failure_sheet(
    originals: np.ndarray,
    transformed: np.ndarray,
    params: np.ndarray,
    true_classes: Sequence[str],
    predicted_classes: Sequence[str],
    margins: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> None:
    """Writes a contact sheet of failures, `FAILURE_COLUMNS` tiles a row, each `FAILURE_TILE_INCHES` large.

    A tile shows an image (`originals[i]`, pixels 0-255) beside the same
    image under the transformation `params[i]` (`transformed[i]`), with its
    name, true and predicted class at that transformation, margin and
    `(dx, dy, angle)`: what the model gets wrong, and how far a person would
    call it the same picture.
    """
    count = len(originals)
    lengths = [len(transformed), len(params), len(true_classes), len(predicted_classes), len(margins), len(names)]
    if not count or any(length != count for length in lengths):
        raise ValueError(
            f"originals, transformed, params, true_classes, predicted_classes, margins and names must "
            f"have one equal, non-zero length; got {[count, *lengths]}"
        )
    rows = -(-count // FAILURE_COLUMNS)
    width, height = FAILURE_TILE_INCHES
    figure = _new_figure(FAILURE_COLUMNS * width, rows * height + (0.3 if title else 0.0))
    tiles = np.ravel(figure.subfigures(rows, FAILURE_COLUMNS, squeeze=False))
    for index, tile in enumerate(tiles[:count]):
        dx, dy, angle = params[index]
        tile.suptitle(
            f"{names[index]}\n{true_classes[index]} → {predicted_classes[index]}, margin {margins[index]:.3g}",
            fontsize="small",
        )
        original, moved = tile.subplots(1, 2)
        _show_pixels(original, originals[index], "original")
        _show_pixels(moved, transformed[index], f"dx {dx:+.3g}, dy {dy:+.3g}, {angle:+.3g}°")
    if title:
        figure.suptitle(title)
    _save(figure, path)


def _show_pixels(axes: Axes, image: np.ndarray, label: str) -> None:
    """Draws an RGB image of pixel values 0-255 unsmoothed, with `label` below and no ticks."""
    axes.imshow(np.clip(np.rint(image), 0, 255).astype(np.uint8), interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlabel(label, fontsize="small")


def lambda_sweep(
    lambdas: Sequence[float],
    objective: Sequence[float],
    clean_accuracy: Sequence[float],
    hs: Sequence[str],
    path: str | Path,
    objective_name: str,
    lambda_min: float,
) -> None:
    """Writes a search's objective and clean accuracy against λ, one colour per h, one point per trial.

    The λ axis is symlog, linear below `lambda_min`, so that λ = 0 (the
    unregularised baseline) shows at its left beside the log-spaced values.
    """
    figure = _new_figure(7, 4.5)
    axes = figure.add_subplot()
    trials = list(zip(lambdas, objective, clean_accuracy, hs))
    for index, h in enumerate(sorted(set(hs))):
        points = sorted((lam, value, clean) for lam, value, clean, trial_h in trials if trial_h == h)
        curve_lambdas, curve_objective, curve_clean = zip(*points)
        axes.plot(curve_lambdas, curve_objective, "o-", color=f"C{index}", label=f"h={h}: {objective_name}")
        axes.plot(
            curve_lambdas, curve_clean, "s--", color=f"C{index}", alpha=0.6, label=f"h={h}: clean validation accuracy"
        )
    axes.set_xscale("symlog", linthresh=lambda_min)
    axes.set_xlabel(f"λ (symlog axis, linear below {lambda_min:g}; λ = 0 is the unregularised baseline)")
    axes.set_ylabel("validation accuracy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    _save(figure, path)


def failure_report(
    entry: Mapping,
    invariance: np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> None:
    """Writes the report attack's figure: how a classifier fails the grid, at a glance.

    Four panels from a report summary entry (`evaluation.failure_report.report_summary`) and the per-image
    invariance scores it averages (`RobustResult.invariance`, fractions): clean and grid accuracy per class;
    grid accuracy within each nested box (|dx| = |dy| limit in pixels × |angle| limit in degrees); the
    histogram of per-image invariance; and clean, worst-of-k and grid accuracy side by side (worst-of-k's
    overestimate of grid accuracy).
    """
    figure = _new_figure(12.0, 8.0)
    (classes, boxes), (spread, attacks) = figure.subplots(2, 2)
    _plot_per_class(classes, entry["per_class"], class_names)
    _plot_boxes(boxes, entry["boxes"])
    spread.hist(np.asarray(invariance) * 100, bins=np.linspace(0, 100, 21), color="tab:blue")
    spread.set_xlabel("grid transformations keeping the clean prediction (%)")
    spread.set_ylabel("images")
    spread.set_title(f"invariance per image (mean {100 * entry['mean_invariance']:.1f} %, KL {entry['mean_kl']:.3f})")
    grid = entry["accuracy"]
    values = [entry["clean_accuracy"], grid + entry["worst_of_k_overestimate"], grid]
    attacks.bar(["clean", "worst of k", "grid"], [100 * v for v in values], color=["tab:gray", "tab:orange", "tab:red"])
    attacks.set_ylabel("accuracy (%)")
    attacks.set_title(f"worst of k overestimates the grid by {100 * entry['worst_of_k_overestimate']:.1f} points")
    if title:
        figure.suptitle(title)
    _save(figure, path)


def _plot_per_class(axes: Axes, rows: Sequence[Mapping], class_names: Sequence[str] | None) -> None:
    """Grouped bars: clean and grid accuracy (%) per class."""
    positions = np.arange(len(rows))
    axes.bar(positions - 0.2, [100 * row["clean"] for row in rows], 0.4, label="clean", color="tab:gray")
    axes.bar(positions + 0.2, [100 * row["grid"] for row in rows], 0.4, label="grid", color="tab:red")
    labels = [class_names[row["label"]] if class_names else str(row["label"]) for row in rows]
    axes.set_xticks(positions, labels, rotation=45, ha="right", fontsize="small")
    axes.set_ylabel("accuracy (%)")
    axes.set_title("per class")
    axes.legend(fontsize="small")


def _plot_boxes(axes: Axes, boxes: Sequence[Mapping]) -> None:
    """A table-like heatmap: grid accuracy (%) within each nested box, shifts as rows, angles as columns."""
    shifts = sorted({box["shift"] for box in boxes})
    angles = sorted({box["angle"] for box in boxes})
    values = np.full((len(shifts), len(angles)), np.nan)
    for box in boxes:
        values[shifts.index(box["shift"]), angles.index(box["angle"])] = 100 * box["accuracy"]
    axes.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        axes.text(column, row, f"{value:.1f}", ha="center", va="center", color="white")
    axes.set_xticks(range(len(angles)), [f"±{angle:g}°" for angle in angles])
    axes.set_yticks(range(len(shifts)), [f"±{shift:g} px" for shift in shifts])
    axes.set_title("grid accuracy within nested boxes (%)")
