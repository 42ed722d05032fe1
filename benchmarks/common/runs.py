"""The bookkeeping of benchmark runs: finished or not, train or resume, refuse stale runs, record where they ran.

A run is finished once its metrics.json exists: a rerun reads it instead of training, and an unfinished run
resumes from its last finished epoch (`experiment.run`). Beside metrics.json, each run trained here gets a
measured.json (when and on which machine its training ended).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from invariance_tf import data, experiment, files, precision, resume
from invariance_tf.experiment_config import ExperimentConfig

NO_DATA = "no data"


def missing_data(config: ExperimentConfig) -> str | None:
    """Why `config`'s dataset cannot be read (no `--data_dir` and no TFDS copy), or None if it can.

    A bad `--data_dir` is not "missing": `experiment.run` reports it as an error.
    """
    if config.data_dir:
        return None
    try:
        data.validate_source(config.dataset)
    except FileNotFoundError as error:
        return str(error)
    return None


def is_finished(config: ExperimentConfig) -> bool:
    """Whether the run wrote its metrics.json."""
    return (Path(config.output_dir) / "metrics.json").is_file()


def check_finished_runs_match(configs: Sequence[ExperimentConfig]) -> None:
    """Refuses finished runs trained or graded with other flags than `configs`, the protocol's current ones.

    After a change to a flagfile, say, their numbers would enter the table under the wrong method or test set.
    """
    for config in configs:
        if not is_finished(config):
            continue
        changed = resume.recorded_changes(config, Path(config.output_dir), resume.EVALUATION_INDEPENDENT)
        if changed:
            raise ValueError(
                f"{config.output_dir} is a finished run made with {resume.flag_list(changed)}, "
                "which this protocol no longer uses: move it out of --out to train the row anew"
            )


def finished_metrics(config: ExperimentConfig) -> dict:
    """The finished run's metrics.json."""
    return json.loads((Path(config.output_dir) / "metrics.json").read_text())


def train_or_load(config: ExperimentConfig) -> dict:
    """The run's metrics.json: read when the run is finished, else trained (resuming an interrupted run)."""
    out = Path(config.output_dir)
    if is_finished(config):
        print(f"skipping {out}: finished (metrics.json exists)", flush=True)
        return finished_metrics(config)
    print(f"training {out}", flush=True)
    keras.backend.clear_session()
    metrics = experiment.run(config)
    files.write_text(out / "measured.json", json.dumps({"date": now(), "machine": machine()}, indent=2) + "\n")
    return metrics


def now() -> str:
    """The current UTC time to the second, ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine() -> dict:
    """Where the numbers were measured, and the precision `--precision=auto` picks there."""
    return {
        "platform": platform.platform(),
        "cpu": precision.cpu_model(),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "precision_auto": precision.resolve(precision.AUTO).reason,
    }


def training_seconds(metrics: dict) -> tuple[float, float]:
    """(summed, fastest-epoch x epochs) training seconds of a finished run: the second is what a quiet machine takes."""
    epoch_seconds = metrics["epoch_seconds"]
    return sum(epoch_seconds), min(epoch_seconds) * len(epoch_seconds)


def measured(config: ExperimentConfig) -> dict | None:
    """When and where a finished run's training ended (its measured.json), or None if not recorded."""
    path = Path(config.output_dir) / "measured.json"
    return json.loads(path.read_text()) if path.is_file() else None


def trained_on(config: ExperimentConfig) -> str:
    """A finished run's CPU and whether it computes bfloat16 natively, from its measured.json.

    The second part tells two kinds of one model name (e.g. "AMD EPYC") apart; "not recorded" without a record.
    """
    record = (measured(config) or {}).get("machine")
    if not record:
        return "not recorded"
    return f"{record['cpu']}; {record['precision_auto'].removeprefix('auto: ')}"


def run_precision(config: ExperimentConfig) -> str:
    """The dtype policy a finished run trained in.

    That is its metrics.json's record (`--precision=auto` resolved), or the policy its config names (runs from
    before `auto`).
    """
    return finished_metrics(config).get("precision", config.precision)
