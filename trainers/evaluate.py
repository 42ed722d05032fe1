"""Evaluate a classifier under spatial attacks: a trainers.fit run, or any Keras / SavedModel / ONNX classifier.

    python -m trainers.evaluate --model_dir runs/quickstart --attack grid,refined [--examples 1000]
    python -m trainers.evaluate --model exported/quickstart/1 --data_dir ../shared/data/cifar10 --attack grid,refined
    python -m trainers.evaluate --model my_model.keras --data_dir cifar10 --input_range 0-1
    python -m trainers.evaluate --model model.onnx --data_dir cifar10 --input_range 0-1 --mean 0.5 --std 0.25

--model is a trainers.fit run folder, a `.keras` file, a SavedModel folder (its `serving_default`
signature, e.g. from trainers.export) or an `.onnx` file; --input_range says which pixel scale it
expects and --mean / --std (1 value or one per channel, in that scale) the normalisation: model input =
(pixels_in_range - mean) / std (`layers.InputConvention`, shared with trainers.fit --init_model; a run
folder's recorded convention is used). The transformations act on the raw images first (the black
canvas is 0 before rescaling and normalisation). A SavedModel is a TensorFlow program: load only ones
you trust as code (docs/finetuning.md). --data_dir is an ImageFolder root (only its test/ split is read)
or a TFDS name.

ONNX models (e.g. exported from PyTorch) run in onnxruntime, NCHW or NHWC: --input_layout=auto finds
the channel axis from the model's input shape (refusing one where both fit), or say nhwc / nchw. They
give no gradients, so spgd and refined are refused; evaluation_state is keyed by the file's bytes,
layout, mean and std.

Attacks: clean, worst_of_k (k random transformations; correct only if all are), spgd (spatial PGD
on the cross-entropy), grid (all 775 transformations of the paper's grid) and refined (the grid,
then S-PGD on the margin in the continuous box from each grid survivor's lowest-margin grid points;
how much the grid overestimates robustness). Written to --output_dir (default: the run folder, or
<model>_evaluation beside --model): evaluation.json (accuracies, 95 % Wilson intervals on a subset),
examples.csv (per example: its image, a path relative to the ImageFolder root or a TFDS id, and label; per
attack: correct, worst dx, dy, angle, margin; clean's worst is the identity), with the brute grid
(--grid_method=brute or --plot) grid_per_angle.csv and grid_per_shift.csv, with --plot
robustness_landscape.png and failures.png (the --failures grid failures with the most negative margins: each
image beside its worst transformation, true and predicted class, margin). Attacks run in chunks of
--chunk_size examples saved in <output_dir>/evaluation_state: a killed evaluation rerun with the same flags
resumes. --symmetry=p4|p4m (with --model_dir) adds how far the logits move under exact quarter-turns (and flips)
of the test images, zero-padded to --symmetry_side, to evaluation.json: a G-network's invariance diagnostic.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import app, flags

from invariance_tf import data, evaluation, files, plots, report, transforms
from invariance_tf import flags as cli_flags
from invariance_tf.evaluation import symmetry
from invariance_tf.evaluation.options import EvaluateOptions
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.model import classifier_network
from invariance_tf.networks import pretrained

cli_flags.define_flags(EvaluateOptions)
flags.adopt_module_key_flags(cli_flags)


def resolve_source(options: EvaluateOptions) -> tuple[Path, str, str | None, tuple[float, float, float], Path]:
    """What `options` evaluate and where the report goes.

    A run folder (--model_dir, or a run folder as --model) gives its dataset, data and limits unless a flag says
    otherwise.
    A --data_dir that names a TFDS dataset (`data.tfds_name`) evaluates that dataset. Returns (model path, dataset,
    ImageFolder root or None for TFDS, limits, output folder); a run folder is the model path itself, so that its
    recorded input convention is read (`pretrained.resolve`).
    """
    model_path = Path(options.model_dir or options.model)
    if (model_path / "config.json").is_file() and (model_path / "model.keras").is_file():
        config = ExperimentConfig.from_json(json.loads((model_path / "config.json").read_text()))
        dataset, data_dir, limits = config.dataset, options.data_dir or config.data_dir or None, tuple(config.limits)
        output_dir = model_path
    else:
        dataset, data_dir, limits = options.dataset, options.data_dir, transforms.DEFAULT_LIMITS
        output_dir = model_path.parent / f"{model_path.stem}_evaluation"
    named = data.tfds_name(data_dir)
    if named is not None:
        dataset, data_dir = named, None
    return model_path, dataset, data_dir, limits, Path(options.output_dir or output_dir)


def run_attacks(
    model: evaluation.Model,
    images: np.ndarray,
    labels: np.ndarray,
    options: EvaluateOptions,
    limits,
    state_dir: Path,
    model_key: str,
    resampling: str = transforms.EVALUATION_RESAMPLING,
) -> dict:
    """Every attack of --attack and the attacks whose results they take, as {name: (result, seconds)}.

    The inputs are `evaluation.Attack.inputs` (the grid for refined); the attacks run in `evaluation.ATTACKS` order,
    the resumable ones in chunks saved in `state_dir`.
    """
    shared = {
        "limits": limits,
        "batch_size": options.batch_size or None,
        "resampling": resampling,
        "seed": (options.seed, 0),
    }
    results = {}
    for name in evaluation.attacks.with_inputs(options.attack):
        attack = evaluation.ATTACKS[name]
        arguments = {
            **attack.accepted(shared),
            **{argument: getattr(options, field) for argument, field in attack.flags.items()},
            **{argument: results[source][0] for argument, source in attack.inputs.items()},
            **(grid_arguments(options) if name == "grid" else {}),
        }
        start = time.perf_counter()
        result = evaluation.run_attack(
            name,
            model,
            images,
            labels,
            state_dir=state_dir,
            chunk_size=options.chunk_size,
            model_key=model_key,
            verbose=True,
            **arguments,
        )
        results[name] = (result, time.perf_counter() - start)
    return results


def grid_arguments(options: EvaluateOptions) -> dict:
    """What other flags ask of the grid.

    The brute method for --plot (the landscape needs the accuracy per transformation), and with refined in
    --attack each survivor's --refine_starts lowest-margin points.
    """
    arguments = {"method": "brute"} if options.plot else {}
    if "refined" in options.attack:
        arguments["keep_lowest"] = options.refine_starts
    return arguments


def summarise(results: dict, examples: int, subset: bool, resampling: str = transforms.EVALUATION_RESAMPLING) -> dict:
    """The evaluation.json entries: accuracy, examples, seconds, 95 % Wilson interval on a subset, refinement gain.

    For the resumable attacks (not clean: one pass, never resumed) also evaluations, resumed examples and the
    resampling of their transformed images.
    """
    summary = {}
    for name, (result, seconds) in results.items():
        correct = int(result.correct.sum())
        entry = {"accuracy": correct / examples, "examples": examples, "seconds": seconds}
        if subset:
            entry["ci95"] = list(report.wilson_interval(correct, examples))
        if evaluation.ATTACKS[name].resumable:
            entry.update(
                evaluations=int(result.evaluations),
                resumed_examples=int(result.resumed_examples),
                resampling=resampling,
            )
        summary[name] = entry
    if "refined" in results:
        grid, refined = results["grid"][0], results["refined"][0]
        summary["refined"].update(
            grid_accuracy=grid.accuracy,
            grid_overestimate=grid.accuracy - refined.accuracy,
            broken_beyond_grid=int((grid.correct & ~refined.correct).sum()),
            seconds_with_grid=results["grid"][1] + results["refined"][1],
        )
    return summary


def write_report(
    output_dir: Path,
    results: dict,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    limits,
    title: str,
    model: evaluation.Model,
    class_names: tuple[str, ...],
    options: EvaluateOptions,
    resampling: str = transforms.EVALUATION_RESAMPLING,
) -> list[Path]:
    """examples.csv (rows named by `names`), and with the brute grid the per-angle and per-shift tables.

    With --plot also the landscape and the sheet of the --failures worst failures.
    """
    outcomes = {name: result for name, (result, _) in results.items()}
    written = []
    if outcomes:
        written.append(output_dir / "examples.csv")
        report.write_examples_csv(written[-1], labels, outcomes, names)
    per_transform = outcomes["grid"].per_transform_accuracy if "grid" in outcomes else None
    if per_transform is not None:
        written += [output_dir / "grid_per_angle.csv", output_dir / "grid_per_shift.csv"]
        report.write_per_angle_csv(written[-2], per_transform, limits)
        report.write_per_shift_csv(written[-1], per_transform, limits)
    if options.plot:
        written.append(output_dir / "robustness_landscape.png")
        plots.robustness_landscape(per_transform, written[-1], limits=limits, title=title)
        written += write_failures(
            output_dir / "failures.png",
            outcomes["grid"],
            model,
            images,
            labels,
            names,
            class_names,
            resampling,
            options.failures,
        )
    return written


def write_failures(
    path: Path,
    grid: evaluation.RobustResult,
    model: evaluation.Model,
    images: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    class_names: tuple[str, ...],
    resampling: str,
    count: int,
) -> list[Path]:
    """failures.png, the `count` grid failures with the most negative margins: [path], or [] when none fails.

    Each original is beside its worst transformation and the class predicted there (one model call). When nothing
    fails the grid, a stale sheet is removed.
    """
    chosen = report.worst_failures(grid.correct, grid.margin, count)
    if not len(chosen):
        path.unlink(missing_ok=True)
        return []
    params = grid.worst_transform[chosen]
    moved = transforms.transform_xla(
        tf.constant(images[chosen], tf.float32), tf.constant(params, tf.float32), resampling
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


def symmetry_report(model_path: Path, images: np.ndarray, options: EvaluateOptions) -> dict:
    """How far the run's logits move under --symmetry's exact transformations of `images` (`symmetry.logit_drift`)."""
    network = classifier_network(pretrained.load_keras(pretrained.resolve(model_path, "--model").path))
    drift = symmetry.logit_drift(
        network, images, options.symmetry, options.symmetry_side or None, options.batch_size or 128
    )
    print(
        f"\n--symmetry={drift['group']} at {drift['side']}x{drift['side']}: logits move by at most "
        f"{drift['max_relative_change']:.2e} of their largest magnitude"
    )
    return {**drift, "examples": len(images)}


def print_table(summary: dict, names: list[str]) -> None:
    """One line per attack: examples, accuracy, its 95 % interval (on a subset) and seconds."""
    print(f"\n{'attack':<12}{'examples':>10}{'accuracy':>10}{'95% CI':>18}{'seconds':>10}")
    for name in names:
        row = summary[name]
        interval = "[{:.3f}, {:.3f}]".format(*row["ci95"]) if "ci95" in row else "-"
        print(f"{name:<12}{row['examples']:>10}{row['accuracy']:>10.4f}{interval:>18}{row['seconds']:>10.1f}")
    if "refined" in summary:
        row = summary["refined"]
        survivors = round(row["grid_accuracy"] * row["examples"])
        print(
            f"\nrefined: {row['broken_beyond_grid']} of the {survivors} grid survivors break in the continuous "
            f"box; grid accuracy overestimates robustness by {100 * row['grid_overestimate']:.2f} points"
        )


def run(options: EvaluateOptions) -> None:
    """Runs the attacks `options` name on the classifier and test images they name, and writes the report.

    evaluation.json is merged into an earlier one, so attacks run apart add up; `write_report` writes the rest.
    """
    model_path, dataset, data_dir, limits, output_dir = resolve_source(options)
    resampling = options.resampling
    image_shape = data.dataset_info(dataset).image_shape
    options.validate_channels(image_shape[-1])
    data.validate_source(dataset, data_dir, splits=("test",))
    model = evaluation.load_classifier(
        model_path, options.input_range, options.mean, options.std, options.input_layout, image_shape
    )
    images, labels, names, info = data.load_with_names(
        dataset, data_dir, "test", examples=options.examples or None, seed=options.seed
    )
    evaluation.check_classifier(model, images, info.num_classes)
    output_dir.mkdir(parents=True, exist_ok=True)
    model_key = f"{evaluation.fingerprint(model)}-{model.convention.input_range}"
    results = run_attacks(
        model, images, labels, options, limits, output_dir / "evaluation_state", model_key, resampling
    )
    summary = summarise(results, len(images), subset=options.examples > 0, resampling=resampling)
    if options.symmetry:
        summary["symmetry"] = symmetry_report(model_path, images, options)
    report_path = output_dir / "evaluation.json"
    merged = json.loads(report_path.read_text()) if report_path.is_file() else {}
    files.write_text(report_path, json.dumps({**merged, **summary}, indent=2))
    written = write_report(
        output_dir,
        results,
        images,
        labels,
        names,
        limits,
        title=f"{model_path.name}: grid accuracy on {len(images)} test images",
        model=model,
        class_names=info.class_names,
        options=options,
        resampling=resampling,
    )
    print_table(summary, list(results))
    print(f"\nwritten to {report_path}" + "".join(f", {path.name}" for path in written))


def main(argv: list[str]) -> None:
    """The command: evaluates under --attack and writes the report; an error exits with one line."""
    try:
        options = cli_flags.from_flags(EvaluateOptions)
        options.validate()
        run(options)
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
