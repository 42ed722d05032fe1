"""What `trainers.evaluate` does, as a library call: a classifier from disk graded by `evaluate`, and its report.

`run` resolves the classifier once (`model_files.resolve`: a `trainers.fit` run folder, a `.keras` file, a
SavedModel folder or an `.onnx` file), reads the test images, grades them and writes to the output folder:
evaluation.json (`Evaluation.summary`, merged into an earlier one, so attacks run apart add up), examples.csv, with
the brute grid grid_per_angle.csv and grid_per_shift.csv, and with `--plot` robustness_landscape.png and
failures.png.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from invariance_tf import data, files, plots, report, transforms
from invariance_tf.evaluation import symmetry
from invariance_tf.evaluation.attacks import ATTACKS, option_values
from invariance_tf.evaluation.classifiers import Classifier, check_classifier, load_classifier
from invariance_tf.evaluation.grid import nested_boxes
from invariance_tf.evaluation.options import EvaluateOptions
from invariance_tf.evaluation.result import Model, RobustResult
from invariance_tf.evaluation.suite import Evaluation, evaluate
from invariance_tf.model_files import Source, resolve


def resolve_source(options: EvaluateOptions) -> tuple[Source, str, str | None, tuple[float, ...], Path]:
    """What `options` evaluate and where the report goes.

    A run folder with its config.json (--model_dir, or a run folder as --model) gives its dataset, data and limits
    unless a flag says otherwise. A --data_dir that names a TFDS dataset (`data.tfds_name`) evaluates that dataset.
    Returns (the resolved classifier, dataset, ImageFolder root or None for TFDS, limits, output folder).
    """
    given = Path(options.model_dir or options.model)
    source = resolve(given, "--model")
    if source.config is not None:
        recorded = source.config
        dataset = recorded.get("dataset", EvaluateOptions.dataset)
        data_dir = options.data_dir or recorded.get("data_dir") or None
        limits, output_dir = tuple(recorded.get("limits", transforms.DEFAULT_LIMITS)), given
    else:
        dataset, data_dir, limits = options.dataset, options.data_dir, transforms.DEFAULT_LIMITS
        output_dir = given.parent / f"{given.stem}_evaluation"
    named = data.tfds_name(data_dir)
    if named is not None:
        dataset, data_dir = named, None
    return source, dataset, data_dir, limits, Path(options.output_dir or output_dir)


def run(options: EvaluateOptions, attack_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Grades the classifier and test images `options` name under --attack, writes the report, returns its summary.

    `attack_options` are the attacks' own options by name (`attacks.option_values`, checked here and named as
    flags in errors); --plot runs the brute grid, whose accuracy per transformation the landscape needs.
    """
    values = option_values(attack_options, flags=True)
    if options.plot:
        values["grid_method"] = "brute"
    source, dataset, data_dir, limits, output_dir = resolve_source(options)
    image_shape = data.dataset_info(dataset).image_shape
    options.validate_channels(image_shape[-1])
    data.validate_source(dataset, data_dir, splits=("test",))
    classifier = load_classifier(
        source, options.input_range, options.mean, options.std, options.input_layout, image_shape
    )
    images, labels, names, info = data.load_with_names(
        dataset, data_dir, "test", examples=options.examples or None, seed=options.seed
    )
    check_classifier(classifier, images, info.num_classes)
    output_dir.mkdir(parents=True, exist_ok=True)
    graded = evaluate(
        classifier,
        (images, labels),
        options.attack,
        values,
        limits=limits,
        batch_size=options.batch_size or None,
        resampling=options.resampling,
        seed=options.seed,
        state_dir=output_dir / "evaluation_state",
        chunk_size=options.chunk_size,
        sample=options.examples > 0,
        verbose=True,
    )
    summary = dict(graded.summary)
    if options.symmetry:
        summary["symmetry"] = symmetry_report(classifier, images, options)
    report_path = output_dir / "evaluation.json"
    merged = json.loads(report_path.read_text()) if report_path.is_file() else {}
    files.write_text(report_path, json.dumps({**merged, **summary}, indent=2))
    title = f"{Path(options.model_dir or options.model).name}: grid accuracy on {len(images)} test images"
    written = write_report(
        output_dir, graded, images, labels, names, limits, title, classifier, info.class_names, options
    )
    print_table(graded.summary)
    print(f"\nwritten to {report_path}" + "".join(f", {path.name}" for path in written))
    return summary


def write_report(
    output_dir: Path,
    graded: Evaluation,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    limits: tuple[float, ...],
    title: str,
    model: Model,
    class_names: tuple[str, ...],
    options: EvaluateOptions,
) -> list[Path]:
    """examples.csv (rows named by `names`) and the tables and figures its attacks and flags ask for.

    With the brute grid the per-angle and per-shift tables, with the report attack its figure
    (`plots.failure_report`), with --plot also the landscape and the sheet of the --failures worst failures.
    Returns the files written.
    """
    outcomes = graded.results
    written = []
    if outcomes:
        written.append(output_dir / "examples.csv")
        report.write_examples_csv(written[-1], labels, outcomes, names, nested_boxes(limits))
    per_transform = outcomes["grid"].per_transform_accuracy if "grid" in outcomes else None
    if per_transform is not None:
        written += [output_dir / "grid_per_angle.csv", output_dir / "grid_per_shift.csv"]
        report.write_per_angle_csv(written[-2], per_transform, limits)
        report.write_per_shift_csv(written[-1], per_transform, limits)
    if "report" in outcomes:
        written.append(output_dir / "failure_report.png")
        plots.failure_report(
            graded.summary["report"], outcomes["report"].invariance, written[-1], class_names, title=title
        )
    if options.plot:
        written.append(output_dir / "robustness_landscape.png")
        plots.robustness_landscape(per_transform, written[-1], limits=limits, title=title)
        sheet = output_dir / "failures.png"
        written += write_failures(sheet, outcomes["grid"], model, images, labels, names, class_names, options)
    return written


def write_failures(
    path: Path,
    grid: RobustResult,
    model: Model,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    class_names: tuple[str, ...],
    options: EvaluateOptions,
) -> list[Path]:
    """failures.png, the --failures grid failures with the most negative margins: [path], or [] when none fails.

    Each original is beside its worst transformation (resampled as --resampling says) and the class predicted there
    (one model call). When nothing fails the grid, a stale sheet is removed.
    """
    chosen = report.worst_failures(grid.correct, grid.margin, options.failures)
    if not len(chosen):
        path.unlink(missing_ok=True)
        return []
    params = grid.worst_transform[chosen]
    moved = transforms.transform_xla(
        tf.constant(images[chosen], tf.float32), tf.constant(params, tf.float32), options.resampling
    ).numpy()
    predicted = np.asarray(model(moved, training=False), np.float32).argmax(axis=-1)
    plots.failure_sheet(
        images[chosen],
        moved,
        params,
        [class_names[i] for i in labels[chosen]],
        [class_names[i] for i in predicted],
        grid.margin[chosen],
        [names[i] for i in chosen],
        path,
        title=f"{len(chosen)} of the {int((~grid.correct).sum())} grid failures, most negative "
        f"margin first (true → predicted at the worst transformation)",
    )
    return [path]


def symmetry_report(classifier: Classifier, images: np.ndarray, options: EvaluateOptions) -> dict[str, Any]:
    """How far the run's logits move under --symmetry's exact transformations of `images` (`symmetry.logit_drift`).

    `classifier` is the run's or the Keras file's, loaded once: its Keras network is read as it is (after training);
    `initial` holds the same for its architecture freshly initialised with --seed (before training).
    """
    arguments = (images, options.symmetry, options.symmetry_side or None, options.batch_size or 128)
    drift = symmetry.logit_drift(classifier.network, *arguments)
    initial = symmetry.logit_drift(symmetry.initialised_copy(classifier.network, options.seed), *arguments)
    print(
        f"\n--symmetry={drift['group']} at {drift['side']}x{drift['side']}: logits move by at most "
        f"{drift['max_relative_change']:.2e} of their largest magnitude after training, "
        f"{initial['max_relative_change']:.2e} before"
    )
    return {**drift, "examples": len(images), "initial": initial}


def print_table(summary: Mapping[str, Mapping[str, Any]]) -> None:
    """One line per attack: examples, accuracy, its 95 % interval (on a subset) and seconds.

    Then each attack's sentence on its entry (`Attack.describe`), e.g. how much the grid overestimates robustness.
    """
    print(f"\n{'attack':<12}{'examples':>10}{'accuracy':>10}{'95% CI':>18}{'seconds':>10}")
    for name, row in summary.items():
        interval = "[{:.3f}, {:.3f}]".format(*row["ci95"]) if "ci95" in row else "-"
        print(f"{name:<12}{row['examples']:>10}{row['accuracy']:>10.4f}{interval:>18}{row['seconds']:>10.1f}")
    for name, row in summary.items():
        if ATTACKS[name].describe is not None:
            print(f"\n{ATTACKS[name].describe(row)}")
