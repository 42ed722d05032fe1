"""A run's output folder: what it holds, when an earlier run in it may resume, and the precision it keeps.

An unfinished run (a backup, no metrics.json) resumes only under the flags it was started with, apart from
`RESUME_INDEPENDENT`; a finished one is refused unless `--overwrite`. `changed_flags` compares a recorded
config.json (or a search's search.json) with the current flags, reading fields an older version did not record as
that version ran (`legacy_values`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from invariance_tf import callbacks, distribute, files, precision
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import flag_value

EPOCH_TIMES = "epoch_seconds.json"
EPOCH_LOGS = "epoch_logs.json"
PRECISION_RECORD = "precision.json"
EVALUATION_STATE = "evaluation_state"
RUN_ARTEFACTS = (
    "metrics.json",
    "model.keras",
    "evaluation.json",
    "checkpoints",
    "backup",
    "logs",
    EPOCH_TIMES,
    EPOCH_LOGS,
    EVALUATION_STATE,
    PRECISION_RECORD,
)


def prepare_output_dir(config: ExperimentConfig) -> Path:
    """Creates `--output_dir`; refuses a finished run unless `--overwrite`, which clears its artefacts.

    An unfinished run (a backup but no metrics.json) is kept, so training resumes.
    Only the chief of a multi-worker cluster clears.
    """
    out = Path(config.output_dir)
    if (out / "metrics.json").is_file():
        if not config.overwrite:
            raise FileExistsError(
                f"--output_dir={out} holds a finished run (metrics.json); pass --overwrite to train again"
            )
    if config.overwrite and distribute.is_chief():
        for name in RUN_ARTEFACTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


RESUME_INDEPENDENT = frozenset(
    {
        "data_dir",
        "output_dir",
        "overwrite",
        "verbose",
        "strategy",
        "deterministic",
        "jit_compile",
        "test_examples",
        "grid_examples",
        "eval_every",
        "eval_report",
        "eval_k",
        "eval_chunk_size",
        "eval_batch_size",
        "grid_subset",
        "eval_resampling",
        "train_eval_examples",
    }
)
"""Fields that change neither the weights nor the optimiser's path: an unfinished run resumes under other values."""

EVALUATION_INDEPENDENT = RESUME_INDEPENDENT - {
    "eval_report",
    "test_examples",
    "grid_examples",
    "grid_subset",
    "eval_resampling",
    "train_eval_examples",
}
"""Fields that change neither a finished run's weights nor what its metrics.json measured (its test images).

A finished run recorded with other values of these still stands for the current flags (`benchmarks.reproduce`).
"""

SEARCH_INDEPENDENT = frozenset({"output_dir", "overwrite", "verbose"})
"""Fields a hyper-parameter search resumes under other values of (`tuning.check_resumable`): no trial changes."""


def legacy_values(saved: dict) -> dict:
    """How a run recorded before a field existed ran, where that differs from the field's default.

    worst_of_k picked both x~ of a three-fold batch (`--ce_adversary_objective=ce`) from one shared set of
    candidates, and the final evaluation resampled as training did (`--resampling`).
    """
    three_fold = saved.get("adversary") == "worst_of_k" and saved.get("ce_adversary_objective") == "ce"
    return {
        **({"shared_candidates": True} if three_fold else {}),
        "eval_resampling": saved.get("resampling", ExperimentConfig.resampling),
    }


def changed_flags(saved: dict, current: dict, ignored: frozenset[str] = frozenset()) -> dict:
    """The keys (flag names) of `current` (JSON-ready) whose value in `saved` differs, apart from `ignored`.

    `saved` is the JSON record of an earlier run or search; the keys come sorted, each with its value in `saved`.
    A config field `saved` lacks (written by an older version) counts as that field's default, which is how the
    older version ran; a key only `saved` has (a flag since removed) means nothing to the current version and is
    not compared. Where older versions behaved otherwise than a field's default, it counts as `legacy_values`
    says.
    """
    defaults = {**json.loads(json.dumps(ExperimentConfig().to_json())), **legacy_values(saved)}
    saved = {**{k: v for k, v in defaults.items() if k in current}, **saved}
    return {k: saved.get(k) for k in sorted(current.keys() - ignored) if saved.get(k) != current.get(k)}


def recorded_changes(config: ExperimentConfig, out: Path, ignored: frozenset[str] = frozenset()) -> dict:
    """The flags, apart from `ignored`, whose value in the run recorded in `out` differs from `config`'s.

    Each comes with its recorded value (from `out`'s config.json); empty when `out` records no run.
    """
    saved_path = out / "config.json"
    if not saved_path.is_file():
        return {}
    return changed_flags(json.loads(saved_path.read_text()), json.loads(json.dumps(config.to_json())), ignored)


def check_resumable(config: ExperimentConfig, out: Path) -> None:
    """Refuses to resume the unfinished run in `out` (a backup and its config.json) with other training flags.

    Its weights and optimiser state belong to the flags it was started with.
    """
    if callbacks.latest_backup(out / "backup") is None:
        return
    changed = recorded_changes(config, out, RESUME_INDEPENDENT)
    if changed:
        raise ValueError(
            f"--output_dir={out} holds an unfinished run started with {flag_list(changed)}: pass the "
            "same flags to resume it, or --overwrite to start afresh"
        )


def run_precision(config: ExperimentConfig, out: Path) -> precision.Choice:
    """The run's dtype policy: `--precision` resolved on this machine when the run starts, then what `out` records.

    A run resumed on other hardware thus keeps the policy it started with.
    """
    record = out / PRECISION_RECORD
    if record.is_file() and callbacks.latest_backup(out / "backup") is not None:
        return precision.Choice(**json.loads(record.read_text()))
    choice = precision.resolve(config.precision)
    if distribute.is_chief():
        files.write_text(record, json.dumps(choice._asdict()))
    return choice


def flag_list(changed: dict) -> str:
    """`changed` (flag name -> value) as flags, comma-separated, for error messages."""
    return ", ".join(f"--{name}={flag_value(value)}" for name, value in changed.items())
