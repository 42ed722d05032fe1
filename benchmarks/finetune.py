"""Robust fine-tuning against training from scratch: grid and clean accuracy per CPU minute on CIFAR-10.

Trains the CPU-scale std row (`benchmarks.reproduce --scale cpu`'s std run: a classifier that is accurate but
not robust), then fine-tunes it with `--init_model` for a few epochs with D.A.+KL, A.T.+KL and A.T.+L2 (each
row's flagfile at CPU scale; a one-cycle learning rate peaking at `--lr` over the fine-tuning epochs). Every
run is graded as `reproduce` grades it: clean accuracy on all 10,000 test images, grid accuracy on the same
2,000. Prints and writes `<out>/finetune.md`, `finetune.csv` and `finetune.png` (grid accuracy against the
minutes of training at the fastest epoch's pace, std pre-training included, beside the from-scratch runs of
`--scratch`, a `reproduce` folder graded the same way on the same kind of machine, and the recipe `--recipe` chose
on validation images, `benchmarks.finetune_recipe`). Runs are resumable and read back once finished; `--commit`
commits each one.

    python -m benchmarks.finetune --data_dir ../shared/data/cifar10 --out docs/results/cifar10_finetune --commit

The target (issue 37): >= 80 % clean and >= 55 % grid accuracy within 30 minutes of training on 2 AMD EPYC
(Zen 4) cores, the std pre-training included, at the fastest epoch's pace (what a quiet machine takes).
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
}
ROW_NAMES = {"std": "std", "da": "D.A.", "da_kl": "D.A.+KL", "at": "A.T.", "at_kl": "A.T.+KL", "at_l2": "A.T.+L2"}
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
BUDGET_MINUTES = 30.0
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
        str(protocols.REPO_ROOT / "docs/results/cifar10_cpu_regime"),
        "a reproduce --out folder whose runs of --seed are drawn beside (from scratch)",
    )
    recipe: str = option(
        str(protocols.REPO_ROOT / "docs/results/cifar10_finetune_recipe"),
        "a benchmarks.finetune_recipe --out folder whose chosen run is drawn beside",
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


def _metrics(run: Path) -> dict | None:
    path = run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def scratch_rows(folder: Path, seed: int) -> list[dict]:
    """The finished runs of seed `seed` in a `reproduce --out` folder, one row per method of `ROW_NAMES`."""
    rows = []
    for name, method in ROW_NAMES.items():
        if (metrics := _metrics(folder / f"{name}_seed{seed}")) is not None:
            rows.append(row(f"{name} (from scratch)", method, len(metrics["epoch_seconds"]), metrics))
    return rows


def recipe_rows(folder: Path, seed: int) -> list[dict]:
    """The run `benchmarks.finetune_recipe` chose in `folder` (its chosen_test.json), std pre-training counted."""
    path = folder / "chosen_test.json"
    if not path.is_file():
        return []
    chosen = json.loads(path.read_text())["chosen"]
    selection = json.loads((folder / "selection.json").read_text())
    method = next(entry["method"] for entry in selection["candidates"] if entry["name"] == chosen)
    std, tuned = (_metrics(folder / f"{run}_seed{seed}") for run in ("std", chosen))
    return [row(f"{chosen} (recipe)", f"{method} fine-tuned", len(tuned["epoch_seconds"]), tuned, minutes(std))]


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
        met = "yes" if meets_target(entry, budget_minutes) else "no"
        lines.append(
            f"| {entry['run']} | {entry['method']} | {entry['epochs']} | {100 * entry['clean_accuracy']:.1f} "
            f"| {100 * entry['grid_accuracy']:.1f} | {entry['train_minutes']:.1f} | "
            f"{entry['total_minutes']:.1f} | {entry['fastest_total_minutes']:.1f} | {met} |"
        )
    lines += [
        "",
        f"Machine: {machine}. Total minutes count the std pre-training. Summed: the epochs' wall time "
        "as measured (the machine may have been shared); fastest epochs: the fastest epoch's time x epochs, "
        "per run (what a quiet machine takes). Target: >= 80 % clean and >= 55 % grid accuracy (grid on "
        "2,000 test images).",
    ]
    return "\n".join(lines) + "\n"


def finetune(options: FinetuneOptions) -> list[dict]:
    """Trains (or reads back) std and each fine-tuning run; writes the table, CSV and figure."""
    out, data_dir, names, seed, lr = Path(options.out), options.data_dir, options.runs, options.seed, options.lr
    beside = recipe_rows(Path(options.recipe), seed) + scratch_rows(Path(options.scratch), seed)
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
        write_outputs(out, rows + beside)
        if options.commit and not was_finished:
            publishing.commit_results(out, f"fine-tuning, {Path(config.output_dir).name}", TABLES)
    return rows + beside


def write_outputs(out: Path, rows: Sequence[dict]) -> None:
    """finetune.md, finetune.csv and finetune.png of the runs so far."""
    files.write_text(out / "finetune.md", table(rows, BUDGET_MINUTES, runs.machine().get("cpu", "unknown CPU")))
    tables.write_csv(out / "finetune.csv", FIELDS, rows)
    plots.cost_vs_robustness(
        [entry["run"] for entry in rows],
        [60 * entry["fastest_total_minutes"] for entry in rows],
        [entry["grid_accuracy"] for entry in rows],
        out / "finetune.png",
        groups=[group(entry["run"]) for entry in rows],
        title="CIFAR-10, 2 CPU cores: grid accuracy against training time (fastest epoch x epochs)",
    )


def group(run: str) -> str:
    """The figure's group of a row."""
    if "scratch" in run:
        return "from scratch"
    return "recipe chosen on validation" if "recipe" in run else "std, then fine-tuned"


def main(options: FinetuneOptions) -> None:
    """The command: trains (or reads) std and the fine-tuning runs and prints the table."""
    Path(options.out).mkdir(parents=True, exist_ok=True)
    rows = finetune(options)
    print(table(rows, BUDGET_MINUTES, runs.machine().get("cpu", "unknown CPU")))


if __name__ == "__main__":
    cli.run(FinetuneOptions, main)
