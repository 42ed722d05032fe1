"""One training run from a flat configuration: the library behind `trainers.fit` and `trainers.search`.

`run` trains an `ExperimentConfig` (`experiment_config`), built by `builders` on the data of `run_data`, resuming an
unfinished run in its output folder (`resume`), then evaluates it and writes metrics.json (`evaluation.final_metrics`
grades the trained model).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from invariance_tf import builders, callbacks, data, distribute, files, precision, resume
from invariance_tf.evaluation import final_metrics
from invariance_tf.experiment_config import ExperimentConfig, flag_arguments
from invariance_tf.networks import cost
from invariance_tf.resume import EPOCH_LOGS, EPOCH_TIMES, EVALUATION_STATE
from invariance_tf.run_data import Splits, fit_inputs, grid_choice, load_splits, steps_per_epoch


def training_callbacks(
    config: ExperimentConfig, out: Path, splits: Splits, root: Path
) -> list[keras.callbacks.Callback]:
    """Backup for resuming, a stop at the first NaN loss, the last good checkpoint, TensorBoard, robust validation.

    They write into `root`: `out` on the chief, a scratch folder on other workers.
    """
    chief = distribute.is_chief()
    checkpoint = root / "checkpoints" / "last.keras"
    result = [
        callbacks.EpochTimes(root / EPOCH_TIMES),
        callbacks.EpochLogs(root / EPOCH_LOGS),
        callbacks.AtomicBackupAndRestore(root / "backup", restore_dir=out / "backup"),
        callbacks.StopOnNonFiniteLoss(checkpoint),
        callbacks.SaveLastModel(checkpoint),
    ]
    if chief:
        result.append(keras.callbacks.TensorBoard(str(out / "logs")))
    if config.eval_every:
        result.insert(
            0,
            callbacks.RobustValidation(
                *splits.validation,
                k=config.eval_k,
                every=config.eval_every,
                limits=config.limits,
                resampling=config.eval_resampling,
                seed=config.seed,
                batch_size=config.evaluation_batch_size,
                log_dir=out / "logs" if chief else None,
            ),
        )
    return result


def configure_process(config: ExperimentConfig, out: Path) -> precision.Choice:
    """Seeds this process (`--seed`), makes its ops deterministic if `--deterministic`, and returns its precision.

    The precision is `resume.run_precision`'s: `--precision` resolved when the run started.
    """
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    compute = resume.run_precision(config, out)
    if config.verbose:
        print(f"precision: {compute.policy} ({compute.reason})", flush=True)
    return compute


def record_config(config: ExperimentConfig, out: Path) -> None:
    """Writes `config` into `out` (on the chief) as config.json, which resuming compares, and as flags.cfg."""
    if distribute.is_chief():
        files.write_text(out / "config.json", json.dumps(config.to_json(), indent=2))
        files.write_text(out / "flags.cfg", "\n".join(flag_arguments(config)) + "\n")


def train(
    model: keras.Model,
    config: ExperimentConfig,
    out: Path,
    splits: Splits,
    extra_callbacks: list[keras.callbacks.Callback],
) -> tuple[keras.callbacks.History, float]:
    """Fits `model` from the run's last finished epoch on; returns its history and this process's seconds of it.

    The callbacks write into `out` on the chief and into a scratch folder, removed afterwards, on other workers.
    """
    root = out if distribute.is_chief() else Path(tempfile.mkdtemp(prefix=f"worker{distribute.task()[1]}_"))
    inputs = fit_inputs(config, splits, first_epoch=callbacks.finished_epochs(out / "backup"))
    start = time.perf_counter()
    try:
        history = model.fit(
            **inputs,
            epochs=config.epochs,
            callbacks=training_callbacks(config, out, splits, root) + extra_callbacks,
            verbose=config.verbose,
        )
    finally:
        if root != out:
            shutil.rmtree(root, ignore_errors=True)
    return history, time.perf_counter() - start


def run(config: ExperimentConfig, extra_callbacks: list[keras.callbacks.Callback] | None = None) -> dict:
    """Trains and evaluates `config`; writes the output directory and returns `metrics.json`'s content.

    Rerunning an interrupted run resumes from its last finished epoch. On a
    multi-worker cluster every worker trains and only the chief evaluates and
    writes; other workers return an empty dict.
    """
    config.validate()
    strategy = distribute.make_strategy(config.strategy)
    out = resume.prepare_output_dir(config)
    resume.check_resumable(config, out)
    compute = configure_process(config, out)
    with strategy.scope():
        network = builders.initial_network(config, data.dataset_info(config.dataset), compute.policy)
    splits = load_splits(config)
    steps = steps_per_epoch(config, splits)
    record_config(config, out)
    with strategy.scope():
        model = builders.build_model(config, splits.info, steps, compute.policy, network)
    history, seconds_this_process = train(model, config, out, splits, list(extra_callbacks or []))
    if not distribute.is_chief():
        return {}
    callbacks.save_model_atomically(builders.saved_form(model), out / "model.keras")
    epoch_seconds = callbacks.EpochTimes(out / EPOCH_TIMES).seconds()
    metrics = {
        "train_seconds": float(sum(epoch_seconds)),
        "train_seconds_this_process": seconds_this_process,
        "epoch_seconds": epoch_seconds,
        "epochs": config.epochs,
        "epochs_this_process": len(history.epoch),
        "replicas_in_sync": strategy.num_replicas_in_sync,
        "precision": compute.policy,
        "precision_reason": compute.reason,
        "parameters": cost.parameter_count(network),
        "macs_per_image": cost.macs_per_image(network),
        "final_train_logs": callbacks.EpochLogs(out / EPOCH_LOGS).last(),
        **final_metrics.robust_metrics(
            model,
            *splits.test,
            config,
            grid_choice(splits.test[1], splits.test_positions, config),
            state_dir=out / EVALUATION_STATE,
            positions=splits.test_positions,
            split_size=splits.test_split_size,
        ),
        **final_metrics.training_regime(model, *splits.train, config),
    }
    files.write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    for finished in ("backup", EVALUATION_STATE):
        shutil.rmtree(out / finished, ignore_errors=True)
    return metrics
