"""Training cost against spatial robustness: worst-of-k with k in {1, 10, 20} and S-PGD, with and without KL.

    python -m benchmarks.compare_cost --dataset cifar10 --out results/cost \
        --data_dir ../shared/data/cifar10 [--scale mini|regime|smoke] [--seeds 0] [--commit]

Methods, each from the paper's flagfile with the adversary changed:

- A.T.: `configs/<dataset>_at.cfg` (CE on x~, x~ the worst of k w.r.t. CE), k = 1, 10, 20;
- A.T.+KL: `configs/<dataset>_at_kl.cfg` (λ = 8; the penalty on the worst of k w.r.t. KL, the CE term on
  the originals and their worst of k w.r.t. CE), k = 1, 10, 20 (k = 1: one random x~ for both terms);
- S-PGD A.T. and S-PGD A.T.+KL: the same two flagfiles with `--adversary=spgd --spgd_steps=5`
  (sign-gradient ascent on the transformation w.r.t. CE; for A.T.+KL one ascent w.r.t. KL and one w.r.t. CE).

All runs share one protocol and run in one process through `experiment.run`, into
`<out>/<method>_k<k>_seed<s>/` (`<out>/spgd_<row>_seed<s>/` for S-PGD); a rerun skips
finished runs. Writes `<out>/cost.csv` (method, k, train_seconds, clean_accuracy,
grid_accuracy, seed, train_seconds_at_fastest_epoch = the fastest epoch times the number of
epochs, for runs on a shared machine, and machine = the run's CPU, whether it computes bfloat16 natively,
and the precision it trained in; k empty for S-PGD)
and `<out>/cost_vs_robustness.png`, rewritten
after every run; with `--commit` (`--out` inside the checkout) each finished run's small
records and the two are committed.

Scales:

- `mini`, for 2 CPU cores, at most about 30 minutes: ResNet-8, a class-balanced subset
  of 5,000 training images, 7 epochs, 1,000 test images with the grid attack on all
  of them (the test protocol of `benchmarks.reproduce --scale mini`; its training
  protocol, 10,000 x 6, would take about 45 minutes here). Budget, from ResNet-8 step
  times on 2 cores, per training image and epoch: A.T. k = 1, 10, 20: 0.8, 4.7, 8.6 ms
  (~100, 600, 1100 ms per step of 128); A.T.+KL k = 1, 10, 20: 1.6, 4.7, 7.4 ms (~100,
  300, 470 ms per step of 64 + 64); S-PGD A.T. 4.4 ms, S-PGD A.T.+KL 4.7 ms: 37 ms for
  the eight runs, so 5,000 x 7 = 35,000 image-epochs take about 21 minutes, and the
  eight evaluations (early-exit grid on 1,000 images, up to a minute each) about 7 more.
  (These per-image times predate A.T.+KL's separate CE adversary, which adds a third 64
  to each of its steps and a second S-PGD search.)
- `regime`, about 2 hours on 2 CPU cores: the ablation's small-data regime
  (`benchmarks.ablation`'s small_data_resnet9), in which A.T.+KL beats A.T.: the mini
  scale of `benchmarks.reproduce` with the CPU recipe's ResNet-9 (width 16) on 2,000
  class-balanced training images for 30 epochs, 1,000 test images with the grid attack
  on all of them.
- `smoke`, for tests: `benchmarks.reproduce`'s smoke protocol (128 training images,
  1 epoch, 20 test images).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import cli, protocols, publishing, runs, tables
from invariance_tf import plots
from invariance_tf.callbacks import TrainingDivergedError
from invariance_tf.options import check, option

KS = (1, 10, 20)
SPGD_STEPS = 5
SCALES = {
    "mini": (
        "--resnet_n=1",
        "--train_examples=5000",
        "--epochs=7",
        "--test_examples=1000",
        "--grid_examples=0",
        "--verbose=2",
    ),
    "regime": (*protocols.SCALES["mini"].overrides, *protocols.SMALL_DATA_RESNET9),
    "smoke": protocols.SCALES["smoke"].overrides,
}
FIELDS = (
    "method",
    "k",
    "train_seconds",
    "clean_accuracy",
    "grid_accuracy",
    "seed",
    "train_seconds_at_fastest_epoch",
    "machine",
)
OUTPUTS = ("cost.csv", "cost_vs_robustness.png")


@dataclasses.dataclass(frozen=True)
class Method:
    """One point of the comparison: a paper row's flagfile with its adversary changed."""

    name: str
    row: str
    overrides: tuple[str, ...]
    k: int | None = None

    @property
    def run_name(self) -> str:
        return f"{self.row}_k{self.k}" if self.k is not None else f"spgd_{self.row}"

    @property
    def label(self) -> str:
        return f"{self.name} k={self.k}" if self.k is not None else self.name


METHODS = (
    *(Method("A.T.", "at", (f"--k={k}",), k) for k in KS),
    *(Method("A.T.+KL", "at_kl", (f"--k={k}",), k) for k in KS),
    Method(f"S-PGD-{SPGD_STEPS} A.T.", "at", ("--adversary=spgd", f"--spgd_steps={SPGD_STEPS}")),
    Method(f"S-PGD-{SPGD_STEPS} A.T.+KL", "at_kl", ("--adversary=spgd", f"--spgd_steps={SPGD_STEPS}")),
)


@dataclasses.dataclass(frozen=True)
class CompareCostOptions:
    """The flags of `benchmarks.compare_cost`."""

    dataset: str | None = option(None, "whose paper flagfiles to start from (required)", choices=protocols.DATASETS)
    scale: str = option("mini", "protocol size (see above)", choices=SCALES)
    out: str | None = option(None, "folder of the runs and results (required)")
    data_dir: str | None = option(None, "local ImageFolder copy <dir>/{train,test}/<class>/<image>; default: TFDS")
    seeds: tuple[int, ...] = option((0,), "seeds of every method, e.g. 0,1")
    commit: bool = option(False, "git-commit each finished run's records, cost.csv and the plot")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "dataset", "out")
        check(self, [cli.seeds_rule(self.seeds), publishing.commit_rule(self.commit, self.out)])


def compare(
    dataset: str,
    scale: str,
    out: Path,
    data_dir: str | None = None,
    seeds: Sequence[int] = (0,),
    commit: bool = False,
) -> list[dict]:
    """Trains (or reuses) every method and seed; returns the rows (cost.csv and the plot are rewritten after each)."""
    rows = []
    for method in METHODS:
        for seed in seeds:
            config = protocols.run_config(
                dataset,
                method.row,
                (*SCALES[scale], *method.overrides),
                seed,
                out / f"{method.run_name}_seed{seed}",
                data_dir,
            )
            was_finished = runs.is_finished(config)
            metrics = runs.train_or_load(config)
            rows.append(
                {
                    "method": method.name,
                    "k": "" if method.k is None else method.k,
                    "train_seconds": metrics["train_seconds"],
                    "clean_accuracy": metrics["clean_accuracy"],
                    "grid_accuracy": metrics["grid_accuracy"],
                    "seed": seed,
                    "train_seconds_at_fastest_epoch": runs.training_seconds(metrics)[1],
                    "machine": f"{runs.trained_on(config)}; {runs.run_precision(config)}",
                    "label": method.label if len(seeds) == 1 else f"{method.label} seed {seed}",
                }
            )
            write_outputs(out, rows, f"{protocols.DATASETS[dataset]}, {scale} scale: robustness against training cost")
            if commit and not was_finished:
                message = f"cost {dataset} {scale}, {Path(config.output_dir).name}"
                publishing.commit_results(out, message, tables=OUTPUTS)
    return rows


def write_outputs(out: Path, rows: Sequence[dict], title: str) -> None:
    """cost.csv and cost_vs_robustness.png of the runs finished so far."""
    out.mkdir(parents=True, exist_ok=True)
    tables.write_csv(out / "cost.csv", FIELDS, rows)
    plots.cost_vs_robustness(
        [row["label"] for row in rows],
        np.array([row["train_seconds"] for row in rows]),
        np.array([row["grid_accuracy"] for row in rows]),
        out / "cost_vs_robustness.png",
        groups=[row["method"] for row in rows],
        title=title,
    )


def main(options: CompareCostOptions) -> None:
    """The command: trains (or reads) every method, prints the comparison; an error exits with one line."""
    out = Path(options.out)
    data_dir = str(Path(options.data_dir).resolve()) if options.data_dir else None
    try:
        rows = compare(options.dataset, options.scale, out, data_dir, options.seeds, options.commit)
    except (ValueError, FileNotFoundError, TrainingDivergedError) as error:
        sys.exit(f"error: {error}")
    print(f"\n{'method':<22}{'k':>4}{'seed':>6}{'train s':>10}{'clean':>8}{'grid':>8}")
    for row in rows:
        print(
            f"{row['method']:<22}{row['k']!s:>4}{row['seed']:>6}{row['train_seconds']:>10.1f}"
            f"{row['clean_accuracy']:>8.3f}{row['grid_accuracy']:>8.3f}"
        )
    print(f"\nwritten to {out / 'cost.csv'} and {out / 'cost_vs_robustness.png'}")


if __name__ == "__main__":
    cli.run(CompareCostOptions, main)
