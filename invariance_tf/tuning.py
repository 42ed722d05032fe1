"""Hyper-parameter search over λ and h with keras-tuner: the library behind `trainers.search`.

The search space is λ = 0 (no penalty) or λ log-uniform in
`[lambda_min, lambda_max]`, and h in `h_choices`, encoded as three
hyper-parameters: the boolean `regularise` and, only while it is true,
`lambda` and `h`. With `regularise` false the trial is the base config with
`lambda_reg=0` (its h and adversary unchanged), so the unregularised
baseline is always a candidate; `include_zero` makes it the first trial.
When h changes and the config's adversary maximises a semimetric, the
adversary follows h (A.T.+KL becomes A.T.+L2), so that x̃ is the worst case
of the penalty actually trained.

Every trial builds its model with `builders.build_model`, from the same
seed (same initialisation and data order), trains on the training split and
reports, after its last epoch, the robust validation accuracy on the held-out
validation split (worst-of-k, or the grid attack on a small subset) as the
objective, beside the clean validation accuracy and the training seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import keras_tuner as kt
import tensorflow as tf

from invariance_tf import builders, data, files, plots, resume, run_data, semimetrics
from invariance_tf.callbacks import GridValidation, RobustValidation
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, is_count, option

TUNERS = ("bayesian", "hyperband", "random")
OBJECTIVES = ("grid", "worst_of_k")
PROJECT_NAME = "keras_tuner"
DEFAULT_VALIDATION_EXAMPLES = 500
# `InvarianceModel.test_step` logs clean accuracy as "acc_nat"; Keras prefixes validation logs with "val_".
CLEAN_ACCURACY = "val_acc_nat"
SECONDS = "seconds"
RESULT_FILES = ("best.json", "trials.csv", "lambda_vs_robustness.png")
SEARCH_INDEPENDENT_OPTIONS = frozenset({"max_trials", "search_dir"})
"""`SearchOptions` fields a search resumes under other values of, as it does `resume.SEARCH_INDEPENDENT`."""
_ORACLE_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


@dataclasses.dataclass
class SearchOptions:
    """The flags of `trainers.search` beyond the trainer's: field names equal the flag names (see its `--help`)."""

    tuner: str = option("bayesian", "search algorithm", choices=TUNERS)
    max_trials: int = option(10, "trials in all; rerun with a larger value to extend a search")
    search_dir: str = option("", "keras-tuner's state and the results (empty = <--output_dir>_search)")
    lambda_min: float = option(0.01, "smallest λ > 0 of the log-uniform range")
    lambda_max: float = option(100.0, "largest λ of the log-uniform range")
    h_choices: tuple[str, ...] = option(
        ("kl", "l2"),
        f"semimetrics h to try, from {sorted(semimetrics.SEMIMETRICS)}; a semimetric --adversary_objective follows h",
    )
    include_zero: bool = option(
        True, "run λ = 0 (the unregularised baseline) as the first trial; λ = 0 is a candidate either way"
    )
    objective: str = option(
        "worst_of_k",
        "what to maximise after the last epoch: worst_of_k (validation "
        "worst-of-<--eval_k> accuracy) | grid (validation grid accuracy on "
        "--grid_validation_examples images)",
        choices=OBJECTIVES,
    )
    grid_validation_examples: int = option(100, "validation images of the grid objective")

    def validate(self) -> None:
        """Raises ValueError naming the first bad option as its flag, before any expensive work."""
        checks = [
            ("max_trials", is_count(self.max_trials), "must be >= 1"),
            (
                "lambda_min",
                math.isfinite(self.lambda_min) and self.lambda_min > 0,
                "must be > 0 (λ = 0 is always a candidate besides the log-uniform range)",
            ),
            ("lambda_max", math.isfinite(self.lambda_max), "must be finite"),
            ("lambda_min", self.lambda_min < self.lambda_max, f"must be < --lambda_max={self.lambda_max}"),
            (
                "h_choices",
                bool(self.h_choices) and set(self.h_choices) <= set(semimetrics.SEMIMETRICS),
                f"valid semimetrics are {sorted(semimetrics.SEMIMETRICS)}",
            ),
            ("h_choices", len(set(self.h_choices)) == len(self.h_choices), "lists a semimetric twice"),
            ("grid_validation_examples", is_count(self.grid_validation_examples), "must be >= 1"),
        ]
        check(self, checks)
        if "KERASTUNER_ORACLE_IP" in os.environ:
            missing = [name for name in _ORACLE_ENV if not os.environ.get(name)]
            if missing:
                raise ValueError(
                    f"KERASTUNER_ORACLE_IP is set but {', '.join(missing)} is not: a distributed "
                    f"search needs all of {list(_ORACLE_ENV)}"
                )


def search_dir(config: ExperimentConfig, options: SearchOptions) -> Path:
    """`--search_dir`, or `<--output_dir>_search` when it is empty."""
    return Path(options.search_dir or f"{config.output_dir.rstrip('/')}_search")


def apply_hyperparameters(config: ExperimentConfig, values: dict) -> ExperimentConfig:
    """`config` with the trial's `regularise`, `lambda` and `h` values applied.

    A semimetric adversary objective follows h; a cross-entropy one stays.
    Without the penalty, a config whose CE term is on natural images only is
    standard training, so it drops the adversary.
    """
    if not values["regularise"]:
        adversary = "none" if config.ce_on == "nat" else config.adversary
        return dataclasses.replace(config, lambda_reg=0.0, adversary=adversary)
    h = values["h"]
    adversary_objective = h if config.adversary_objective in semimetrics.SEMIMETRICS else config.adversary_objective
    return dataclasses.replace(config, lambda_reg=float(values["lambda"]), h=h, adversary_objective=adversary_objective)


def validate(config: ExperimentConfig, options: SearchOptions) -> None:
    """Checks the options, and the config at every corner of the search space, before any data is read."""
    options.validate()
    if config.validation_examples < 1:
        raise ValueError(
            f"--validation_examples={config.validation_examples} is invalid: tuning needs a held-out "
            "validation split (>= 1 examples)"
        )
    config.validate()
    apply_hyperparameters(config, {"regularise": False}).validate()
    for h in options.h_choices:
        apply_hyperparameters(config, {"regularise": True, "lambda": options.lambda_max, "h": h}).validate()


def objective_name(config: ExperimentConfig, options: SearchOptions) -> str:
    """The epoch-log key the search maximises."""
    return GridValidation.key if options.objective == "grid" else f"val_worst_of_{config.eval_k}_accuracy"


class InvarianceHyperModel(kt.HyperModel):
    """Builds and trains `config` with the trial's λ and h, through `builders.build_model`."""

    def __init__(self, config: ExperimentConfig, options: SearchOptions, splits: run_data.Splits):
        super().__init__(name="invariance")
        self.config, self.options, self.splits = config, options, splits
        self.steps_per_epoch = run_data.steps_per_epoch(config, splits)

    def trial_config(self, hp: kt.HyperParameters) -> ExperimentConfig:
        """Declares the search space in `hp` and returns the config of its current values."""
        hp.Boolean("regularise", default=True)
        with hp.conditional_scope("regularise", [True]):
            hp.Float("lambda", self.options.lambda_min, self.options.lambda_max, sampling="log")
            hp.Choice("h", list(self.options.h_choices))
        return apply_hyperparameters(self.config, hp.values)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        config = self.trial_config(hp)
        keras.utils.set_random_seed(config.seed)
        return builders.build_model(config, self.splits.info, self.steps_per_epoch)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *, callbacks=(), **kwargs) -> dict:
        """Trains on the training split and returns the last epoch's logs and the training seconds.

        A continued Hyperband trial trains from its `initial_epoch`'s batches. A trial whose loss becomes NaN or
        infinite fails (no retry).
        """
        config = self.trial_config(hp)
        inputs = run_data.fit_inputs(config, self.splits, first_epoch=kwargs.get("initial_epoch", 0))
        start = time.perf_counter()
        history = model.fit(
            **inputs,
            callbacks=[keras.callbacks.TerminateOnNaN(), self._objective_callback(config), *callbacks],
            **kwargs,
        )
        seconds = time.perf_counter() - start
        logs = {name: float(values[-1]) for name, values in history.history.items()}
        if not math.isfinite(logs["loss"]):
            raise kt.errors.FailedTrialError(
                f"training loss became {logs['loss']} with --lambda_reg={config.lambda_reg} --h={config.h}"
            )
        return {**logs, SECONDS: seconds}

    def _objective_callback(self, config: ExperimentConfig) -> keras.callbacks.Callback:
        images, labels = self.splits.validation
        batch_size = config.evaluation_batch_size
        if self.options.objective == "grid":
            chosen = data.at_most(labels, self.options.grid_validation_examples, config.seed)
            return GridValidation(
                images[chosen],
                labels[chosen],
                limits=config.limits,
                batch_size=batch_size,
                resampling=config.eval_resampling,
            )
        return RobustValidation(
            images,
            labels,
            k=config.eval_k,
            every=1,
            limits=config.limits,
            seed=config.seed,
            batch_size=batch_size,
            resampling=config.eval_resampling,
        )


class _BaselineFirst:
    """Oracle mixin: while the `baseline` values have not been tried, they are the next random candidate.

    Every keras-tuner oracle draws its random candidates (random search, the
    initial points of Bayesian optimisation, new Hyperband brackets) with
    `_random_values`, and records a candidate as tried the moment its trial
    starts, so the baseline runs once, also across resumes and workers.
    """

    def __init__(self, *args, baseline: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.baseline = baseline

    def _random_values(self):
        if self.baseline is not None and not self._duplicate(self.baseline):
            return dict(self.baseline)
        return super()._random_values()


class RandomSearchOracle(_BaselineFirst, kt.oracles.RandomSearchOracle):
    """`kt.oracles.RandomSearchOracle` that can start with a baseline."""


class BayesianOptimizationOracle(_BaselineFirst, kt.oracles.BayesianOptimizationOracle):
    """`kt.oracles.BayesianOptimizationOracle` that can start with a baseline."""


class HyperbandOracle(_BaselineFirst, kt.oracles.HyperbandOracle):
    """`kt.oracles.HyperbandOracle` that can start with a baseline and stops after `max_trials` trials."""

    def __init__(self, *args, max_trials: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_trials = max_trials


class _Hyperband(kt.Hyperband):
    """`kt.Hyperband` (which resumes partly trained trials) running a given oracle instead of its own."""

    def __init__(self, oracle: kt.Oracle, **kwargs):
        kt.Tuner.__init__(self, oracle=oracle, **kwargs)


def is_worker() -> bool:
    """Whether this process is a worker of a distributed search (it runs trials; the chief keeps the results)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


def make_tuner(
    config: ExperimentConfig, options: SearchOptions, hypermodel: kt.HyperModel, overwrite: bool = False
) -> kt.Tuner:
    """The keras-tuner `Tuner` of `options.tuner`; it resumes the search in the search directory unless `overwrite`.

    Hyperband trains up to `--epochs` epochs per trial and runs brackets until `max_trials` trials.
    """
    common = {
        "objective": kt.Objective(objective_name(config, options), direction="max"),
        "max_trials": options.max_trials,
        # keras-tuner treats seed 0 as "no seed", hence the offset.
        "seed": config.seed + 1,
        "baseline": {"regularise": False} if options.include_zero else None,
    }
    if options.tuner == "hyperband":
        oracle = HyperbandOracle(max_epochs=config.epochs, factor=3, hyperband_iterations=options.max_trials, **common)
        tuner_class = _Hyperband
    else:
        oracle = (BayesianOptimizationOracle if options.tuner == "bayesian" else RandomSearchOracle)(**common)
        tuner_class = kt.Tuner
    return tuner_class(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=str(search_dir(config, options)),
        project_name=PROJECT_NAME,
        overwrite=overwrite,
    )


def _description(config: ExperimentConfig, options: SearchOptions) -> dict:
    """The flags that define a search, JSON-ready: all but the search-independent ones."""
    values = {
        **{k: v for k, v in config.to_json().items() if k not in resume.SEARCH_INDEPENDENT},
        **{k: v for k, v in dataclasses.asdict(options).items() if k not in SEARCH_INDEPENDENT_OPTIONS},
    }
    return json.loads(json.dumps(values))


def check_resumable(config: ExperimentConfig, options: SearchOptions) -> None:
    """Records the search's flags in `<search_dir>/search.json`; refuses to resume a search with other flags.

    `--overwrite` starts afresh instead: it also deletes the previous results.
    """
    out = search_dir(config, options)
    path = out / "search.json"
    description = _description(config, options)
    if config.overwrite:
        for name in RESULT_FILES:
            (out / name).unlink(missing_ok=True)
    elif path.is_file():
        saved = json.loads(path.read_text())
        changed = resume.changed_flags(saved, description)
        if changed:
            raise ValueError(
                f"--search_dir={path.parent} holds a search started with {resume.flag_list(changed)}: "
                "use another --search_dir, the same flags to resume, or --overwrite to start afresh"
            )
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(path, json.dumps(description, indent=2) + "\n")


@dataclasses.dataclass
class TrialRow:
    """One trial of the search, as a row of `trials.csv`."""

    trial_id: str
    status: str
    lambda_reg: float
    h: str
    adversary_objective: str
    objective: float | None
    clean_accuracy: float | None
    seconds: float | None


def trial_rows(config: ExperimentConfig, oracle: kt.Oracle) -> list[TrialRow]:
    """Every trial the oracle knows, in trial-id order."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda trial: int(trial.trial_id)):
        trial_config = apply_hyperparameters(config, trial.hyperparameters.values)
        rows.append(
            TrialRow(
                trial.trial_id,
                trial.status,
                trial_config.lambda_reg,
                trial_config.h,
                trial_config.adversary_objective,
                objective=trial.score if trial.status == "COMPLETED" else None,
                clean_accuracy=_last_value(trial, CLEAN_ACCURACY),
                seconds=_last_value(trial, SECONDS),
            )
        )
    return rows


def _last_value(trial: kt.engine.trial.Trial, name: str) -> float | None:
    return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None


def write_csv(rows: list[TrialRow], path: Path) -> None:
    """Writes the trials as `path` (CSV, one row a trial), atomically."""
    fields = [field.name for field in dataclasses.fields(TrialRow)]
    with files.atomic_path(path) as partial, partial.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in dataclasses.asdict(row).items()})


def plot(rows: list[TrialRow], objective: str, lambda_min: float, path: Path) -> None:
    """Objective and clean accuracy of the completed trials against λ (`plots.lambda_sweep`)."""
    completed = [row for row in rows if row.objective is not None]
    plots.lambda_sweep(
        [row.lambda_reg for row in completed],
        [row.objective for row in completed],
        [row.clean_accuracy for row in completed],
        [row.h for row in completed],
        path,
        objective_name=objective,
        lambda_min=lambda_min,
    )


def write_results(
    config: ExperimentConfig,
    options: SearchOptions,
    oracle: kt.Oracle,
    retrain_command: Callable[[ExperimentConfig], str],
) -> dict:
    """Writes best.json, trials.csv and lambda_vs_robustness.png into the search directory; returns best.json.

    best.json's `command` is `retrain_command` of the best trial's config, writing to `<search_dir>/best`.
    """
    out = search_dir(config, options)
    rows = trial_rows(config, oracle)
    completed = [trial for trial in oracle.get_best_trials(len(rows)) if trial.status == "COMPLETED"]
    if not completed:
        raise ValueError(
            f"no trial of the search in {out} completed; see the messages in {out / PROJECT_NAME}/trial_*/trial.json"
        )
    best = completed[0]
    best_config = dataclasses.replace(
        apply_hyperparameters(config, best.hyperparameters.values), output_dir=str(out / "best")
    )
    row = next(row for row in rows if row.trial_id == best.trial_id)
    summary = {
        "objective": objective_name(config, options),
        "value": best.score,
        "clean_accuracy": row.clean_accuracy,
        "trial_id": best.trial_id,
        "lambda_reg": best_config.lambda_reg,
        "h": best_config.h,
        "adversary_objective": best_config.adversary_objective,
        "hyperparameters": best.hyperparameters.values,
        "completed_trials": len(completed),
        "command": retrain_command(best_config),
    }
    best_json, trials_csv, figure = (out / name for name in RESULT_FILES)
    files.write_text(best_json, json.dumps(summary, indent=2) + "\n")
    write_csv(rows, trials_csv)
    plot(rows, summary["objective"], options.lambda_min, figure)
    return summary


def search(
    config: ExperimentConfig, options: SearchOptions, retrain_command: Callable[[ExperimentConfig], str]
) -> dict:
    """Runs (or resumes) the search; on the chief or a single process, writes the results and returns best.json.

    `retrain_command` gives the command line that trains a config (`invariance_tf.flags.command_line`).

    A worker of a distributed search runs trials until the chief's oracle
    stops it and returns an empty dict.
    """
    validate(config, options)
    worker = is_worker()
    if not worker:
        check_resumable(config, options)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    hypermodel = InvarianceHyperModel(config, options, run_data.load_splits(config))
    tuner = make_tuner(config, options, hypermodel, overwrite=config.overwrite and not worker)
    tuner.search(epochs=config.epochs, verbose=config.verbose)
    if worker:
        return {}
    tuner.results_summary()
    return write_results(config, options, tuner.oracle, retrain_command)
