"""Robust fine-tuning against training from scratch: grid and clean accuracy per CPU minute on CIFAR-10.

Trains the CPU-scale std row (`benchmarks.reproduce --scale cpu`'s std run: a classifier that is accurate but
not robust), then fine-tunes it with `--init_model` for a few epochs with D.A.+KL, A.T.+KL and A.T.+L2 (each
row's flagfile at CPU scale; a one-cycle learning rate peaking at `--lr` over the fine-tuning epochs). Every
run is graded as `reproduce` grades it: clean accuracy on all 10,000 test images, grid accuracy on the same
2,000. Prints and writes `<out>/finetune.md`, `finetune.csv` and `finetune.png` (grid accuracy against the
minutes of training, std pre-training included, beside the from-scratch rows of `--scratch`, a committed
`reproduce` results.json). Runs are resumable and read back once finished; `--commit` commits each one.

    python -m benchmarks.finetune --data_dir ../shared/data/cifar10 --out docs/results/cifar10_finetune --commit

The target (issue 22): >= 80 % clean and >= 55 % grid accuracy within 30 minutes of training on 2 cores of
the Intel Xeon kind, 60 on the AMD EPYC kind, the std pre-training included.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import cli, protocols, publishing, runs, tables
from invariance_tf import files, plots
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option

# name -> (row, fine-tuning epochs); `--lr` is the peak of each one's one-cycle schedule.
FINETUNES: dict[str, tuple[str, int]] = {
    "da_kl_e2": ("da_kl", 2),
    "at_l2_e2": ("at_l2", 2),
    "da_kl_e4": ("da_kl", 4),
    "at_kl_e2": ("at_kl", 2),
    "at_l2_e4": ("at_l2", 4),
}
ROW_NAMES = {"std": "std", "da_kl": "D.A.+KL", "at_kl": "A.T.+KL", "at_l2": "A.T.+L2", "da": "D.A.", "at": "A.T."}
FIELDS = (
    "run",
    "method",
    "epochs",
    "clean_accuracy",
    "grid_accuracy",
    "train_minutes",
    "total_minutes",
    "fastest_total_minutes",
)
TARGET = {"clean_accuracy": 0.80, "grid_accuracy": 0.55}
TABLES = ("finetune.md", "finetune.csv", "finetune.png")


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """The flags of `benchmarks.finetune`."""

    out: str | None = option(None, "folder of the runs and the table (required)")
    data_dir: str | None = option(None, "local CIFAR-10 ImageFolder copy; default: TFDS")
    runs: tuple[str, ...] = option(tuple(FINETUNES), f"comma-separated among {list(FINETUNES)}")
    seed: int = option(0, "seed of every run")
    lr: float = option(0.1, "peak learning rate of the fine-tuning one-cycle")
    scratch: str = option(
        str(protocols.REPO_ROOT / "docs/results/cifar10_cpu/results.json"),
        "a reproduce results.json whose rows are drawn beside (from scratch)",
    )
    commit: bool = option(False, "git-commit each finished run's records and the table")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "out")
        check(
            self,
            [
                cli.names_rule("runs", self.runs, list(FINETUNES)),
                ("lr", self.lr > 0, "must be > 0"),
            ],
        )


def std_config(out: Path, data_dir: str | None, seed: int) -> ExperimentConfig:
    """The pre-training run: the CPU scale's std row."""
    return protocols.scale_config("cifar10", "std", "cpu", seed, out, data_dir)


def finetune_config(
    name: str, std: ExperimentConfig, out: Path, data_dir: str | None, seed: int, lr: float
) -> ExperimentConfig:
    """Fine-tuning `std`'s classifier with `FINETUNES[name]`: the row at CPU scale, its epochs and peak lr."""
    row, epochs = FINETUNES[name]
    return row_config(row, epochs, std, out / f"{name}_seed{seed}", data_dir, seed, lr)


def row_config(
    row: str, epochs: int, std: ExperimentConfig, output_dir: Path, data_dir: str | None, seed: int, lr: float
) -> ExperimentConfig:
    """Fine-tuning `std`'s classifier with `row`'s flagfile at CPU scale for `epochs`, `lr` the one-cycle's peak."""
    overrides = (
        *protocols.SCALES["cpu"].overrides,
        f"--epochs={epochs}",
        f"--lr={lr:g}",
        f"--init_model={std.output_dir}",
    )
    return protocols.run_config(
        "cifar10", row, overrides, seed, output_dir, data_dir, protocols.SCALES["cpu"].batch_multiplier
    )


def minutes(metrics: dict) -> tuple[float, float]:
    """(summed, fastest-epoch x epochs) training minutes of a run (`runs.training_seconds`)."""
    summed, fastest = runs.training_seconds(metrics)
    return summed / 60, fastest / 60


def row(run: str, method: str, epochs: int, metrics: dict, before: tuple[float, float] = (0.0, 0.0)) -> dict:
    """One CSV row; `before` is the pre-training's (summed, fastest) minutes, counted into the totals."""
    summed, fastest = minutes(metrics)
    return {
        "run": run,
        "method": method,
        "epochs": epochs,
        "clean_accuracy": metrics["clean_accuracy"],
        "grid_accuracy": metrics["grid_accuracy"],
        "train_minutes": summed,
        "total_minutes": summed + before[0],
        "fastest_total_minutes": fastest + before[1],
    }


def scratch_rows(path: Path | None) -> list[dict]:
    """The from-scratch rows of a `reproduce` results.json (none without one)."""
    if path is None or not path.is_file():
        return []
    results = json.loads(path.read_text())["rows"]
    return [
        {
            "run": f"{name} (from scratch)",
            "method": ROW_NAMES.get(name, name),
            "epochs": protocols.CPU_EPOCHS,
            "clean_accuracy": values["clean_accuracy"],
            "grid_accuracy": values["grid_accuracy"],
            "train_minutes": values["train_seconds"] / 60,
            "total_minutes": values["train_seconds"] / 60,
            "fastest_total_minutes": float("nan"),
        }
        for name, values in results.items()
        if name in ROW_NAMES
    ]


def meets_target(entry: dict, budget_minutes: float) -> bool:
    """Whether a run reaches the target accuracies within `budget_minutes` of training (quiet-machine time)."""
    return (
        entry["clean_accuracy"] >= TARGET["clean_accuracy"]
        and entry["grid_accuracy"] >= TARGET["grid_accuracy"]
        and entry["fastest_total_minutes"] <= budget_minutes
    )


def table(rows: Sequence[dict], budget_minutes: float, machine: str) -> str:
    """The markdown table of every run, with whether it meets the target on this machine's budget."""
    lines = [
        "# Robust fine-tuning of the CPU-scale std classifier (CIFAR-10)",
        "",
        "| run | method | epochs | clean (%) | grid (%) | training min | total min (summed) | "
        f"total min (fastest epochs) | target in {budget_minutes:g} min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for entry in rows:
        fastest = entry["fastest_total_minutes"]
        met = "–" if fastest != fastest else ("yes" if meets_target(entry, budget_minutes) else "no")
        lines.append(
            f"| {entry['run']} | {entry['method']} | {entry['epochs']} | {100 * entry['clean_accuracy']:.1f} "
            f"| {100 * entry['grid_accuracy']:.1f} | {entry['train_minutes']:.1f} | "
            f"{entry['total_minutes']:.1f} | {'–' if fastest != fastest else f'{fastest:.1f}'} | {met} |"
        )
    lines += [
        "",
        f"Machine: {machine}. Total minutes count the std pre-training. Summed: the epochs' wall time "
        "as measured (the machine may have been shared); fastest epochs: the fastest epoch's time x epochs, "
        "per run (what a quiet machine takes). Target: >= 80 % clean and >= 55 % grid accuracy (grid on "
        "2,000 test images).",
    ]
    return "\n".join(lines) + "\n"


def budget(machine: dict) -> float:
    """The target's minutes for this kind of machine: 30 on Intel Xeon, 60 on AMD EPYC (and anything else)."""
    return 30.0 if "Intel" in machine.get("cpu", "") else 60.0


def finetune(
    out: Path, data_dir: str | None, names: Sequence[str], seed: int, lr: float, scratch: Path | None, commit: bool
) -> list[dict]:
    """Trains (or reads back) std and each fine-tuning run; writes the table, CSV and figure."""
    std = std_config(out, data_dir, seed)
    configs = [std, *(finetune_config(name, std, out, data_dir, seed, lr) for name in names)]
    runs.check_finished_runs_match(configs)
    rows = []
    for name, config in zip(["std", *names], configs):
        was_finished = runs.is_finished(config)
        metrics = runs.train_or_load(config)
        if name == "std":
            before = minutes(metrics)
            rows.append(row("std (pre-training)", "std", config.epochs, metrics))
        else:
            rows.append(row(name, ROW_NAMES[FINETUNES[name][0]] + " fine-tuned", config.epochs, metrics, before))
        write_outputs(out, rows + scratch_rows(scratch))
        if commit and not was_finished:
            publishing.commit_results(out, f"fine-tuning, {Path(config.output_dir).name}", TABLES)
    return rows


def write_outputs(out: Path, rows: Sequence[dict]) -> None:
    """finetune.md, finetune.csv and finetune.png of the runs so far."""
    machine = runs.machine()
    files.write_text(out / "finetune.md", table(rows, budget(machine), machine.get("cpu", "unknown CPU")))
    tables.write_csv(out / "finetune.csv", FIELDS, rows)
    plots.cost_vs_robustness(
        [entry["run"] for entry in rows],
        [60 * entry["total_minutes"] for entry in rows],
        [entry["grid_accuracy"] for entry in rows],
        out / "finetune.png",
        groups=["from scratch" if "scratch" in entry["run"] else "std, then fine-tuned" for entry in rows],
        title="CIFAR-10, 2 CPU cores: grid accuracy against training time",
    )


def main(options: FinetuneOptions) -> None:
    """The command: trains (or reads) std and the fine-tuning runs and prints the table."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = finetune(
        out, options.data_dir, options.runs, options.seed, options.lr, Path(options.scratch), options.commit
    )
    print(table(rows, budget(runs.machine()), runs.machine().get("cpu", "unknown CPU")))


if __name__ == "__main__":
    cli.run(FinetuneOptions, main)
