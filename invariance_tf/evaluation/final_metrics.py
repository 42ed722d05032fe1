"""The final metrics of a `trainers.fit` run: its test and training images graded by `evaluate`, as metrics.json.

Every attack with a `final` group runs (`Attack.final`): the "test" ones (clean, worst_of_k) on every test image
and on `--train_eval_examples` training images, the "grid" ones on the grid's images, resumably, with each
example's outcome. `metrics` maps `evaluate`'s schema to metrics.json's keys, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from invariance_tf import data, report
from invariance_tf.evaluation.attacks import ATTACKS, FINAL_GROUPS, option_values
from invariance_tf.evaluation.suite import SUMMARY_FIELDS, Evaluation, evaluate

if TYPE_CHECKING:
    from invariance_tf.experiment_config import ExperimentConfig


def final_attacks(group: str) -> list[str]:
    """The attacks a run's final metrics grade in `group` ("test" or "grid", `Attack.final`), in `ATTACKS` order."""
    if group not in FINAL_GROUPS:
        raise ValueError(f"Unknown final group {group!r}; valid groups are {list(FINAL_GROUPS)}")
    return [name for name, attack in ATTACKS.items() if attack.final == group]


def settings(config: ExperimentConfig) -> dict[str, Any]:
    """`evaluate`'s arguments that a run's flags set.

    `--eval_k` (worst_of_k's k), `--limits`, `--eval_batch_size`, `--eval_resampling`, `--seed` and `--verbose`;
    the attacks' other options take their defaults.
    """
    return {
        "options": {"k": config.eval_k},
        "limits": config.limits,
        "batch_size": config.eval_batch_size or None,
        "resampling": config.eval_resampling,
        "seed": config.seed,
        "verbose": bool(config.verbose),
    }


def metrics(
    evaluation: Evaluation, options: dict[str, Any], per_example: bool = False, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """`evaluation`'s summary as metrics.json's entries, per attack in order (of `names` only, when given).

    Its accuracy named by `Attack.metric` (formatted with the option values `options`: `worst_of_10_accuracy`);
    with `per_example` (the "grid" group) first `<attack>_examples`, and after the accuracy its 95 % Wilson interval
    `<metric>_ci95` and each example's outcome `<attack>_correct` (`report.bits`); last the attack's own summary
    fields as `<attack>_<field>`.
    """
    values = option_values(options)
    entries: dict[str, Any] = {}
    for name, entry in evaluation.summary.items():
        if names is not None and name not in names:
            continue
        metric = ATTACKS[name].metric.format(attack=name, **values)
        if per_example:
            entries[f"{name}_examples"] = entry["examples"]
        entries[metric] = entry["accuracy"]
        if per_example:
            entries[f"{metric}_ci95"] = entry["ci95"]
            entries[f"{name}_correct"] = report.bits(evaluation.results[name].correct)
        entries.update({f"{name}_{field}": value for field, value in entry.items() if field not in SUMMARY_FIELDS})
    return entries


def own_fields(evaluation: Evaluation, name: str) -> dict[str, Any]:
    """The attack `name`'s own summary fields (`Attack.summary`) as `<name>_<field>`, or {} when it did not run."""
    entry = evaluation.summary.get(name, {})
    return {f"{name}_{field}": value for field, value in entry.items() if field not in SUMMARY_FIELDS}


def robust_metrics(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    config: ExperimentConfig,
    grid: np.ndarray | None = None,
    state_dir: Path | None = None,
    positions: np.ndarray | None = None,
    split_size: int | None = None,
) -> dict[str, Any]:
    """Clean, worst-of-k and grid accuracy (fractions) on the given test images, and each grid example's outcome.

    The "test" attacks (`final_attacks`) grade every image; the "grid" ones the images `grid` indexes
    (`run_data.grid_choice`; None: all), with their 95 % Wilson interval and each example's outcome
    (`grid_correct`, `report.bits`), which lets runs that graded the same images compare paired. `positions` are
    the images' positions in the whole test split of `split_size` images (default: the whole split, in order);
    `test_images` and `grid_images` record which were graded (`report.image_set`). Transformed images are
    resampled as `--eval_resampling` says. With `--eval_report`, the report attack grades the grid's images too
    (the grid then runs brute), its own fields as `report_<field>` (`evaluation.failure_report`).

    With `state_dir`, the grid runs in chunks of `--eval_chunk_size` examples saved there, so a killed
    evaluation resumes (`evaluation.resumable`).
    """
    positions = np.arange(len(labels)) if positions is None else np.asarray(positions)
    split_size = len(labels) if split_size is None else split_size
    chosen = np.arange(len(labels)) if grid is None else np.asarray(grid)
    arguments = settings(config)
    graded = evaluate(
        model,
        (images[chosen], labels[chosen]),
        [*final_attacks("grid"), *(["report"] if config.eval_report else [])],
        state_dir=state_dir,
        chunk_size=config.eval_chunk_size,
        **arguments,
    )
    tested = evaluate(model, (images, labels), final_attacks("test"), **arguments)
    return {
        "test_examples": int(len(images)),
        **metrics(tested, arguments["options"]),
        **metrics(graded, arguments["options"], per_example=True, names=final_attacks("grid")),
        **own_fields(graded, "report"),
        "eval_resampling": config.eval_resampling,
        "test_images": report.image_set(positions, split_size),
        "grid_images": report.image_set(positions[chosen], split_size),
    }


def training_regime(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, config: ExperimentConfig
) -> dict[str, Any]:
    """The "test" attacks' accuracies (clean, worst-of-`--eval_k`) on `--train_eval_examples` training images, or {}.

    Graded in inference mode with the final weights and the test's rule (correct only if all k fixed random
    transformations are), on a class-balanced subset drawn with the run's seed, so a run's training and test
    accuracies compare alike: a run far more accurate on its training images overfits. Keys are the test's
    (`metrics`) with a `train_` prefix.
    """
    if not config.train_eval_examples:
        return {}
    chosen = data.at_most(labels, config.train_eval_examples, config.seed)
    images, labels = images[chosen], labels[chosen]
    arguments = settings(config)
    graded = evaluate(model, (images, labels), final_attacks("test"), **arguments)
    entries = metrics(graded, arguments["options"])
    return {"train_eval_examples": int(len(labels)), **{f"train_{key}": value for key, value in entries.items()}}
