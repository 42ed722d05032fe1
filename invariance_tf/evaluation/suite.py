"""`evaluate`: one classifier under the attacks named, summarised in one schema.

The library call behind `trainers.evaluate` (its evaluation.json is `Evaluation.summary`) and the final metrics of
`trainers.fit` (`final_metrics`, which maps the schema to metrics.json's keys).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from invariance_tf import report, transforms
from invariance_tf.evaluation.attacks import ATTACKS, arguments, option_values, with_inputs
from invariance_tf.evaluation.chunks import run_attack
from invariance_tf.evaluation.classifiers import model_key as key_of
from invariance_tf.evaluation.result import Model, RobustResult

SUMMARY_FIELDS = ("accuracy", "examples", "seconds", "ci95", "evaluations", "resumed_examples", "resampling")
"""The fields every attack's summary entry may have; an attack's own (`Attack.summary`) come after them."""


@dataclasses.dataclass
class Evaluation:
    """What `evaluate` returns: per attack run, in `ATTACKS` order, its per-example result and its summary entry.

    Attributes:
        results: per attack, its `RobustResult` (correct, margin and worst transformation per example).
        summary: per attack, its entry (`SUMMARY_FIELDS`): `accuracy`, the fraction of examples correct under
            every transformation it tried; `examples`; `seconds`, the wall-clock time it took; `ci95`, the 95 %
            Wilson interval [low, high] of the accuracy when the examples are a sample; for a resumable attack
            `evaluations` ((image, transformation) pairs classified, a gradient step counting as one),
            `resumed_examples` (read from saved state) and `resampling`; then the attack's own fields.
    """

    results: dict[str, RobustResult]
    summary: dict[str, dict[str, Any]]


def evaluate(
    classifier: Model,
    data: tuple[Any, Any],
    attacks: Sequence[str] = ("clean", "grid"),
    options: Mapping[str, Any] | None = None,
    limits: Sequence[float] = transforms.DEFAULT_LIMITS,
    batch_size: int | None = None,
    resampling: str = transforms.EVALUATION_RESAMPLING,
    seed: int = 0,
    state_dir: str | Path | None = None,
    chunk_size: int = 500,
    model_key: str | None = None,
    sample: bool = True,
    verbose: bool = False,
) -> Evaluation:
    """Robust accuracy of `classifier` on `data` under `attacks` (and their inputs), as an `Evaluation`.

    Args:
        classifier: a Keras model, a `Classifier` or any `classifier(images, training=False) -> logits` [N, classes].
        data: `(images, labels)`: raw pixels [N, H, W, C] in [0, 255] (black canvas: 0), integer labels [N].
        attacks: names in `ATTACKS`; they run in `ATTACKS` order, after their inputs (`Attack.inputs`).
        options: the attacks' own options by name (`attacks.options()`, the `trainers.evaluate` flags:
            `{"k": 10}`); the others take their defaults.
        limits: (dx, dy, angle), pixels right, pixels down, degrees counter-clockwise, each in [-limit, limit].
        batch_size: (image, transformation) pairs per model call; None: `default_batch_size()`.
        resampling: how transformed images are resampled (`transforms.RESAMPLINGS`).
        seed: the seed of the random attacks, used as the stateless seed (seed, 0).
        state_dir: with it, the resumable attacks run in chunks of `chunk_size` examples saved there, so a killed
            evaluation rerun alike resumes (`resumable`); None: each attack in one pass.
        chunk_size: examples per saved chunk; results of the seeded attacks depend on it (`resumable`).
        model_key: names the classifier in the saved state; None: `classifiers.model_key(classifier)`.
        sample: whether the examples are a sample of a larger set, so each entry gives its `ci95`.
        verbose: show the grid's progress bar and what is resumed.

    Raises:
        ValueError: (one line) for an unknown attack or option, an invalid option value or bad inputs.
    """
    names = with_inputs(attacks)
    values = option_values(options)
    if state_dir is not None and model_key is None:
        model_key = key_of(classifier)
    shared = {"limits": limits, "batch_size": batch_size, "resampling": resampling, "seed": (seed, 0)}
    saving = {"state_dir": state_dir, "chunk_size": chunk_size, "model_key": model_key, "verbose": verbose}
    results: dict[str, RobustResult] = {}
    seconds: dict[str, float] = {}
    for name in names:
        attack, start = ATTACKS[name], time.perf_counter()
        inputs = {argument: results[source] for argument, source in attack.inputs.items()}
        own = {**attack.accepted(shared), **arguments(name, names, values), **inputs}
        results[name] = run_attack(name, classifier, *data, **saving, **own)
        seconds[name] = time.perf_counter() - start
    return Evaluation(results, {name: _entry(name, results, seconds, resampling, sample) for name in names})


def _entry(
    name: str, results: Mapping[str, RobustResult], seconds: Mapping[str, float], resampling: str, sample: bool
) -> dict[str, Any]:
    """The summary entry of the attack `name` (`Evaluation.summary`)."""
    attack, result = ATTACKS[name], results[name]
    examples, correct = len(result.correct), int(result.correct.sum())
    entry: dict[str, Any] = {"accuracy": correct / examples, "examples": examples, "seconds": seconds[name]}
    if sample:
        entry["ci95"] = list(report.wilson_interval(correct, examples))
    if attack.resumable:
        entry.update(
            evaluations=int(result.evaluations), resumed_examples=int(result.resumed_examples), resampling=resampling
        )
    if attack.summary is not None:
        entry.update(attack.summary(results, seconds))
    return entry
