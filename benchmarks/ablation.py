"""What makes A.T.+KL beat A.T.: pairs of runs on the same seed and test images, one factor changed at a time.

    python -m benchmarks.ablation --scale mini --out docs/results/cifar10_ablation_mini \
        --data_dir ../shared/data/cifar10 [--factors base,crop_flip] [--seeds 0] [--commit]

Every factor is a pair, A.T. and A.T.+KL, trained from the paper flagfiles
(`configs/cifar10_at.cfg`, `configs/cifar10_at_kl.cfg`) with the scale's flags
of `benchmarks.reproduce` (`benchmarks.common.protocols`) and the factor's own
flags appended to one or both rows (`FACTORS`). A run's folder is named by its flags, so a run that several
factors share (the baseline A.T. of every factor that changes A.T.+KL only)
trains once. Runs are resumable and skipped once finished, as in `reproduce`;
with `--commit` each finished run's small records and the table are committed.

For each factor and seed it writes, in `<out>/ablation.md` and `ablation.json`:
both runs' clean and grid accuracy, the paired difference of grid accuracy
(A.T.+KL minus A.T., over the same test images, `report.paired_difference`:
a paired bootstrap 95 % interval and McNemar's exact p-value), and the regime:
each run's training accuracy on its own CE batch (`acc_adv`, or `acc_nat`
without one, the last epoch's running mean in training mode) beside its
worst-of-10 and clean test accuracy. A run whose training accuracy is not
clearly above its test accuracy underfits.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import cli, protocols, publishing, runs, tables
from invariance_tf import files, report
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option

ROWS = ("at", "at_kl")
# name -> (what it tests, flags appended to A.T., flags appended to A.T.+KL)
FACTORS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "base": ("the scale's faithful protocol", (), ()),
    "small_data_long": (
        "regime: 2,000 training images for 30 epochs (at mini scale the same steps as 10,000 "
        "for 6), so training accuracy exceeds test accuracy",
        ("--train_examples=2000", "--epochs=30"),
        ("--train_examples=2000", "--epochs=30"),
    ),
    "small_data_resnet9": (
        "regime with capacity: the CPU recipe's ResNet-9 (width 16) on 2,000 training images "
        "for 30 epochs, so that training accuracy clearly exceeds test accuracy",
        protocols.SMALL_DATA_RESNET9,
        protocols.SMALL_DATA_RESNET9,
    ),
    "reference_at_half_batch": (
        "the reference's A.T. baseline: CE on the second half of its batch only",
        ("--reference_half_batch_ce=true",),
        (),
    ),
    "shared_candidates": (
        "both x~ of A.T.+KL from the same 10 draws instead of two searches",
        (),
        ("--shared_candidates=true",),
    ),
    "crop_flip": ("+-4 px crops and flips on every row instead of flips only", ("--augment=on",), ("--augment=on",)),
    "label_smoothing": (
        "label smoothing 0.2 (the CPU recipe's)",
        ("--label_smoothing=0.2",),
        ("--label_smoothing=0.2",),
    ),
    "lambda_2": ("lambda = 2 instead of the reference's 8", (), ("--lambda_reg=2",)),
    "weight_decay": ("weight decay 5e-4 (the CPU recipe's)", ("--weight_decay=5e-4",), ("--weight_decay=5e-4",)),
    "onecycle": (
        "one-cycle learning rate (peak 0.4) with Nesterov (the CPU recipe's)",
        ("--lr_schedule=onecycle", "--lr=0.4", "--nesterov"),
        ("--lr_schedule=onecycle", "--lr=0.4", "--nesterov"),
    ),
    "bfloat16": ("mixed_bfloat16 compute", ("--precision=mixed_bfloat16",), ("--precision=mixed_bfloat16",)),
    "resnet9": (
        "the CPU recipe's ResNet-9 (width 16) instead of ResNet-8",
        ("--network=resnet9", "--width=16"),
        ("--network=resnet9", "--width=16"),
    ),
    "step_imbalance": (
        "A.T. with twice the originals per step (half the steps), as the project's flagfiles had",
        ("--batch_size=128",),
        (),
    ),
    "composed_resampling": (
        "one composed resampling instead of the reference's two, in training and in grading (as recorded)",
        ("--resampling=composed", "--eval_resampling=composed"),
        ("--resampling=composed", "--eval_resampling=composed"),
    ),
}


@dataclasses.dataclass(frozen=True)
class AblationOptions:
    """The flags of `benchmarks.ablation`."""

    scale: str = option("mini", "protocol size", choices=("mini", "cpu", "smoke"))
    out: str | None = option(None, "folder of the runs and the table (required)")
    data_dir: str | None = option(None, "local CIFAR-10 ImageFolder copy; default: TFDS")
    factors: tuple[str, ...] = option(tuple(FACTORS), f"comma-separated factors among {list(FACTORS)}")
    seeds: tuple[int, ...] = option((0,), "comma-separated seeds")
    commit: bool = option(False, "git-commit each finished run's records and the table")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        cli.check_required(self, "out")
        check(
            self,
            [
                cli.names_rule("factors", self.factors, list(FACTORS)),
                cli.seeds_rule(self.seeds),
                publishing.commit_rule(self.commit, self.out),
            ],
        )


def run_name(row: str, flags: Sequence[str]) -> str:
    """A run folder's name: the row and its extra training flags, e.g. `at_kl__lambda_reg=2`, or `at__base`.

    `--eval_resampling`, how the run is graded, does not name it.
    """
    training = [flag for flag in flags if not flag.startswith("--eval_resampling=")]
    suffix = "__".join(flag.lstrip("-").replace("/", "_") for flag in training) or "base"
    return f"{row}__{suffix}"


def run_config(
    row: str, flags: Sequence[str], scale: str, seed: int, out: Path, data_dir: str | None
) -> ExperimentConfig:
    """One run: the row's flagfile, the scale's flags, then the factor's."""
    protocol = protocols.SCALES[scale]
    return protocols.run_config(
        "cifar10",
        row,
        (*protocol.overrides, *flags),
        seed,
        out / f"{run_name(row, flags)}_seed{seed}",
        data_dir,
        protocol.batch_multiplier,
    )


def regime(metrics: dict) -> dict:
    """Training accuracy on the run's own CE batch against its test accuracies (fractions)."""
    return {
        "train_accuracy": tables.train_accuracy(metrics),
        "test_worst_of_10": metrics["worst_of_10_accuracy"],
        "test_clean": metrics["clean_accuracy"],
    }


def compare(at: dict, at_kl: dict) -> dict:
    """The pair's accuracies, regimes and the paired grid difference (A.T.+KL minus A.T.)."""
    report.check_paired(at, at_kl, ("A.T.", "A.T.+KL"))
    return {
        "at": {"clean": at["clean_accuracy"], "grid": at["grid_accuracy"], **regime(at)},
        "at_kl": {"clean": at_kl["clean_accuracy"], "grid": at_kl["grid_accuracy"], **regime(at_kl)},
        "grid_difference": report.paired_difference(
            report.from_bits(at["grid_correct"]), report.from_bits(at_kl["grid_correct"])
        ),
    }


def gap_change(pair: dict, base: dict) -> dict:
    """How much a factor moves the gap: (A.T.+KL − A.T.) under it minus under the base, per example, bootstrapped.

    `pair` and `base` map "at" and "at_kl" to metrics.json contents graded on the same test images.
    """
    gaps = [
        report.from_bits(metrics["at_kl"]["grid_correct"]).astype(float)
        - report.from_bits(metrics["at"]["grid_correct"]).astype(float)
        for metrics in (pair, base)
    ]
    change = gaps[0] - gaps[1]
    return {"difference": float(change.mean()), "ci": list(report.bootstrap_interval(change))}


def add_gap_changes(results: dict, finished: dict[tuple[str, int], dict]) -> None:
    """Sets `gap_change` of every compared pair without one whose seed's `base` pair is compared too."""
    for (factor, seed), metrics in finished.items():
        pair = results["factors"][factor][str(seed)]
        base = results["factors"].get("base", {}).get(str(seed))
        if factor != "base" and pair is not None and base is not None and "gap_change" not in pair:
            pair["gap_change"] = gap_change(metrics, finished["base", seed])


def table(results: dict) -> str:
    """ablation.md: one line per factor and seed."""
    lines = [
        "# A.T. against A.T.+KL, one factor at a time",
        "",
        f"Scale: {results['scale']} (`benchmarks.reproduce`), CIFAR-10. Grid accuracy on the same test images "
        "for both rows of a pair; Δ = A.T.+KL − A.T. with its paired bootstrap 95 % interval and McNemar's "
        "exact p. Δ − base: how much the factor moves Δ, (A.T.+KL − A.T.) under it minus under `base` on the same "
        "seed, per example, with its paired bootstrap 95 % interval. Train = training accuracy on the run's own "
        "CE batch (last epoch, training mode); w10 = worst-of-10 test accuracy.",
        "",
        "| factor | seed | A.T. clean / grid | A.T.+KL clean / grid | Δ grid [95 % CI] | McNemar p "
        "| Δ − base [95 % CI] | A.T. train / w10 | A.T.+KL train / w10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for factor, by_seed in results["factors"].items():
        for seed, pair in by_seed.items():
            if pair is None:
                lines.append(f"| {factor} | {seed} | pending | pending | | | | | |")
                continue
            at, kl, d = pair["at"], pair["at_kl"], pair["grid_difference"]
            change = pair.get("gap_change")
            moved = _points(change["difference"], change["ci"]) if change else "–"
            lines.append(
                f"| {factor} | {seed} | {100 * at['clean']:.1f} / {100 * at['grid']:.1f} | "
                f"{100 * kl['clean']:.1f} / {100 * kl['grid']:.1f} | {_points(d['difference'], d['ci'])} | "
                f"{d['mcnemar_p']:.3g} | {moved} | "
                f"{100 * at['train_accuracy']:.1f} / {100 * at['test_worst_of_10']:.1f} | "
                f"{100 * kl['train_accuracy']:.1f} / {100 * kl['test_worst_of_10']:.1f} |"
            )
    lines += ["", "Factors:", ""] + [
        f"- `{name}`: {FACTORS[name][0]}; A.T. `{' '.join(FACTORS[name][1]) or '–'}`, "
        f"A.T.+KL `{' '.join(FACTORS[name][2]) or '–'}`"
        for name in results["factors"]
    ]
    return "\n".join(lines) + "\n"


def _points(difference: float, ci: Sequence[float]) -> str:
    """A difference of fractions in points with its interval: `+4.9 [+2.6, +7.3]`."""
    return f"{100 * difference:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def ablation(
    scale: str, out: Path, data_dir: str | None, factors: Sequence[str], seeds: Sequence[int], commit: bool = False
) -> dict:
    """Trains (or reads) every pair, factor by factor and seed by seed; rewrites the table after each run."""
    configs = {
        (factor, seed): {
            row: run_config(row, FACTORS[factor][1 + i], scale, seed, out, data_dir) for i, row in enumerate(ROWS)
        }
        for seed in seeds
        for factor in factors
    }
    runs.check_finished_runs_match([config for pair in configs.values() for config in pair.values()])
    results = {"scale": scale, "factors": {factor: {str(seed): None for seed in seeds} for factor in factors}}
    finished: dict[tuple[str, int], dict] = {}
    for (factor, seed), pair in configs.items():
        metrics = finished[factor, seed] = {}
        for row, config in pair.items():
            was_finished = runs.is_finished(config)
            metrics[row] = runs.train_or_load(config)
            if not was_finished and commit:
                write_outputs(out, results)
                publishing.commit_results(
                    out, f"ablation {scale}, {Path(config.output_dir).name}", tables=("ablation.md", "ablation.json")
                )
        results["factors"][factor][str(seed)] = compare(metrics["at"], metrics["at_kl"])
        add_gap_changes(results, finished)
        write_outputs(out, results)
    if commit:
        publishing.commit_results(out, f"ablation {scale}", tables=("ablation.md", "ablation.json"))
    return results


def write_outputs(out: Path, results: dict) -> None:
    """ablation.json and ablation.md of the pairs finished so far."""
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / "ablation.json", json.dumps(results, indent=2) + "\n")
    files.write_text(out / "ablation.md", table(results))


def main(options: AblationOptions) -> None:
    """The command: trains (or reads) the pairs the flags ask for and prints the table; an error exits with one line."""
    out = Path(options.out)
    data_dir = str(Path(options.data_dir).resolve()) if options.data_dir else None
    try:
        ablation(options.scale, out, data_dir, options.factors, options.seeds, options.commit)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print((out / "ablation.md").read_text())


if __name__ == "__main__":
    cli.run(AblationOptions, main)
