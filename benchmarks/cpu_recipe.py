"""Accuracy per CPU-minute: the recipe search behind `benchmarks.reproduce --scale cpu`.

Trains standard CIFAR-10 classifiers on the whole training split with candidate
networks and recipes, through `experiment.run` (`configs/cifar10_std.cfg` plus
each candidate's flags), and prints clean accuracy on the whole test set, the
training wall time and clean accuracy per training minute, one line per
candidate, into `<out>/recipes.csv`. Finished candidates are read back, not
retrained (each run resumes like `trainers.fit`).

    python -m benchmarks.cpu_recipe --data_dir ../shared/data/cifar10 --out docs/results/cifar10_cpu_recipe \
        [--candidates resnet8_step_e10,resnet9_w16_e12]
    python -m benchmarks.cpu_recipe --throughput [--steps 8]

`--throughput` instead times training steps of the candidate networks (planar,
p4 G-ResNets for a G-ResNet row of the same cost, and the G-ResNet-9s of the fair
G-row, matched in parameters) at batch 256 in float32 and bfloat16 (random pixels,
after untimed warm-up steps) and prints images/s and the ratio to the paper family's
ResNet-8 in float32, measured in one run.

The target: standard training >= 80 % clean accuracy on the whole test set in
<= 20 minutes of training on 2 CPU cores, so that every paper row (A.T. costs
about 4-5x standard training) fits a CPU budget.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
from pathlib import Path

import keras

from benchmarks.common import cli, protocols, runs, tables, timing
from invariance_tf import networks, precision
from invariance_tf.options import check, option

STD_FLAGFILE = protocols.CONFIGS / "cifar10_std.cfg"
COMMON = ("--test_examples=0", "--grid_examples=1000", "--verbose=2")
CANDIDATES: dict[str, tuple[str, ...]] = {
    "resnet8_step_e10": ("--resnet_n=1", "--epochs=10"),
    "resnet8_onecycle_e10": (
        "--resnet_n=1",
        "--epochs=10",
        "--lr_schedule=onecycle",
        "--lr=0.2",
        "--nesterov",
        "--label_smoothing=0.1",
    ),
    "resnet9_w16_e8": (*protocols.CPU_RECIPE, "--batch_size=256", "--epochs=8"),
    "resnet9_w16_e12": (*protocols.CPU_RECIPE, "--batch_size=256", "--epochs=12"),
    "resnet9_w16_e12_float32": (*protocols.CPU_RECIPE, "--batch_size=256", "--epochs=12", "--precision=float32"),
}
FIELDS = (
    "candidate",
    "flags",
    "clean_accuracy",
    "grid_accuracy",
    "train_seconds",
    "clean_accuracy_per_minute",
    "epoch_seconds_min",
)


@dataclasses.dataclass(frozen=True)
class CpuRecipeOptions:
    """The flags of `benchmarks.cpu_recipe`."""

    data_dir: str | None = option(None, "CIFAR-10 ImageFolder copy (recipe runs)")
    out: str | None = option(None, "folder of the runs and recipes.csv (recipe runs)")
    throughput: bool = option(False, "time the candidate networks instead")
    steps: int = option(8, "timed steps per network (--throughput)")
    candidates: tuple[str, ...] = option(tuple(CANDIDATES), f"comma-separated candidates among {list(CANDIDATES)}")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag: recipe runs need --data_dir and --out."""
        if not self.throughput and (self.data_dir is None or self.out is None):
            raise ValueError("recipe runs need --data_dir and --out (or pass --throughput)")
        check(
            self,
            [
                ("steps", self.steps >= 1, "must be >= 1"),
                cli.names_rule("candidates", self.candidates, list(CANDIDATES)),
            ],
        )


def run_candidate(name: str, out: Path, data_dir: str) -> dict:
    """Trains (or reads back) one candidate; returns its CSV row."""
    config = protocols.config_from_flagfile(
        STD_FLAGFILE, *CANDIDATES[name], *COMMON, f"--data_dir={data_dir}", f"--output_dir={out / name}"
    )
    keras.backend.clear_session()
    metrics = runs.train_or_load(config)
    return {
        "candidate": name,
        "flags": " ".join(CANDIDATES[name]),
        "clean_accuracy": round(metrics["clean_accuracy"], 4),
        "grid_accuracy": round(metrics["grid_accuracy"], 4),
        "train_seconds": round(metrics["train_seconds"], 1),
        "clean_accuracy_per_minute": round(metrics["clean_accuracy"] / (metrics["train_seconds"] / 60), 4),
        "epoch_seconds_min": round(min(metrics.get("epoch_seconds") or [float("nan")]), 1),
    }


NETWORKS = {
    "resnet8": ("resnet", {"n": 1}),
    "resnet20": ("resnet", {"n": 3}),
    "resnet9_w16": ("resnet9", {"width": 16}),
    "resnet9_w24": ("resnet9", {"width": 24}),
    "resnet9_w32": ("resnet9", {"width": 32}),
    "p4_resnet8_g3": ("g_resnet", {"depth": 8, "group": "p4", "widths": (3, 6, 12)}),
    "p4_resnet8_g4": ("g_resnet", {"depth": 8, "group": "p4", "widths": (4, 8, 16)}),
    "p4_resnet8_g6": ("g_resnet", {"depth": 8, "group": "p4", "widths": (6, 12, 24)}),
    "p4_resnet14_g4": ("g_resnet", {"depth": 14, "group": "p4", "widths": (4, 8, 16)}),
    "p4_resnet9_w16": ("g_resnet9", {"width": 16, "group": "p4"}),
    "p4m_resnet9_w16": ("g_resnet9", {"width": 16, "group": "p4m"}),
}
PRECISIONS = ("float32", "mixed_bfloat16")


def images_per_second(network: str, policy: str, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Training throughput of one network under one dtype policy, on random raw pixels."""
    keras.backend.clear_session()
    name, kwargs = NETWORKS[network]
    with networks.dtype_policy(policy):
        model = networks.build(name, **kwargs)
    return timing.training_throughput(model, batch_size, steps, warmup)


def throughput(steps: int, batch_size: int = 256) -> None:
    """Prints images/s of every network x precision and the ratio to ResNet-8 in float32."""
    measured = {
        (network, policy): images_per_second(network, policy, batch_size, steps)
        for network in NETWORKS
        for policy in PRECISIONS
    }
    reference = measured[("resnet8", "float32")]
    print(precision.describe_machine())
    auto = precision.resolve(precision.AUTO)
    print(f"--precision=auto here: {auto.policy} ({auto.reason})")
    print(f"{'network':<16}{'precision':<16}{'images/s':>10}{'/ resnet8 fp32':>16}{'bf16 / fp32':>13}")
    for (network, policy), value in measured.items():
        speedup = value / measured[(network, "float32")]
        print(f"{network:<16}{policy:<16}{value:>10.0f}{value / reference:>16.2f}{speedup:>13.2f}")


def main(options: CpuRecipeOptions) -> None:
    """The command: runs the candidates and writes recipes.csv, or times the networks."""
    if options.throughput:
        throughput(options.steps)
        return
    out, data_dir = Path(options.out), str(Path(options.data_dir).resolve())
    rows = [run_candidate(name, out, data_dir) for name in options.candidates]
    tables.write_csv(out / "recipes.csv", FIELDS, rows)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    cli.run(CpuRecipeOptions, main)
