"""One command for whoever has a device: the paper's rows at full scale, XLA on and off, and their projected time.

    python -m benchmarks.device_report [--out device_report.json] [--rows std,da,da_kl,at,at_kl,at_l2]
    python -m benchmarks.device_report --budget=tiny   # a seconds-long smoke run (the test suite's)

Prints the device (GPUs, or the CPU), the dtype policy `--precision=auto` picks there and why, then for each paper
row (`configs/cifar10_<row>.cfg`: ResNet-32, 64 originals per step, the row's batch folds: 2x for D.A. and A.T.,
3x for A.T.+KL's independent searches) the median step time with XLA off and on (`jit_compile=False`/`True`), the
faster of the two, and the projected time of the row's 80,000 steps at it. Steps run on random pixels (a step's
time does not depend on them), so no data set is needed. `--budget=tiny` shrinks every row (ResNet-8, 4 originals,
worst-of-2, one timed step) to check that the report runs, not to measure anything. Writes the report as JSON
(`--out`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from benchmarks.common import cli, timing
from invariance_tf import builders, data, precision
from invariance_tf import flags as cli_flags
from invariance_tf.experiment_config import ExperimentConfig
from invariance_tf.options import check, option

ROWS = ("std", "da", "da_kl", "at", "at_kl", "at_l2")
PAPER_STEPS = 80_000
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"resnet_n": 1, "batch_size": 4, "k": 2}
"""What `--budget=tiny` changes in every row's config."""


@dataclasses.dataclass(frozen=True)
class DeviceReportOptions:
    """The flags of `benchmarks.device_report`."""

    rows: tuple[str, ...] = option(ROWS, "paper rows to time, each configs/cifar10_<row>.cfg")
    budget: str = option("full", "full: the rows as the paper runs them | tiny: a smoke run", ("full", "tiny"))
    steps: int = option(10, "timed steps per row and XLA setting (tiny: 1)")
    out: str = option("", "JSON file to write the report to (empty: print only)")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(self, [cli.names_rule("rows", self.rows, ROWS), ("steps", self.steps >= 1, "must be >= 1")])


def row_config(row: str, budget: str) -> ExperimentConfig:
    """The experiment config of `configs/cifar10_<row>.cfg`, shrunk by `TINY` with `budget="tiny"`.

    Not validated: its `--data_dir` need not exist here, since the steps run on random pixels.
    """
    values = flags.FlagValues()
    cli_flags.define_flags(ExperimentConfig, values)
    values(["device_report", f"--flagfile={CONFIGS / f'cifar10_{row}.cfg'}"])
    config = cli_flags.from_flags(ExperimentConfig, values)
    return dataclasses.replace(config, **TINY) if budget == "tiny" else config


def device_name() -> str:
    """The GPUs TF sees (name and compute capability), or this machine's CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU: {precision.describe_machine()}, {os.cpu_count()} cores"
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    return "GPU: " + ", ".join(f"{d.get('device_name', 'unknown')} {d.get('compute_capability', '')}" for d in details)


def step_seconds(config: ExperimentConfig, policy: str, jit_compile: bool, steps: int, warmup: int) -> float:
    """Median wall seconds of one training step of `config` under `policy`, XLA on or off, on random pixels."""
    keras.backend.clear_session()
    info = data.dataset_info(config.dataset)
    model = builders.build_model(dataclasses.replace(config, jit_compile=jit_compile), info, 781, policy)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (config.batch_size * 4, *info.image_shape)).astype(np.float32)
    labels = rng.integers(0, info.num_classes, len(images))
    return timing.median_step(model, images, labels, config.batch_size, steps, warmup)


def main(options: DeviceReportOptions) -> None:
    started = time.perf_counter()
    choice = precision.resolve("auto")
    tiny = options.budget == "tiny"
    steps, warmup = (1, 1) if tiny else (options.steps, 3)
    print(f"{device_name()}\nprecision: {choice.policy} ({choice.reason})")
    print(f"{'row':<8}{'XLA off':>10}{'XLA on':>10}{'faster':>8}{f'{PAPER_STEPS:,} steps':>16}")
    rows = []
    for row in options.rows:
        config = row_config(row, options.budget)
        seconds = {jit: step_seconds(config, choice.policy, jit, steps, warmup) for jit in (False, True)}
        best = min(seconds, key=seconds.get)
        hours = PAPER_STEPS * seconds[best] / 3600
        rows.append(
            {
                "row": row,
                "network": f"resnet-{6 * config.resnet_n + 2}",
                "batch_size": config.batch_size,
                "step_ms_xla_off": round(seconds[False] * 1e3, 1),
                "step_ms_xla_on": round(seconds[True] * 1e3, 1),
                "faster": "xla" if best else "no_xla",
                "projected_hours": round(hours, 2),
            }
        )
        print(
            f"{row:<8}{seconds[False] * 1e3:>8.0f}ms{seconds[True] * 1e3:>8.0f}ms{'XLA' if best else 'off':>8}"
            f"{hours:>14.1f} h"
        )
    report = {
        "device": device_name(),
        "precision": choice._asdict(),
        "budget": options.budget,
        "timed_steps": steps,
        "paper_steps": PAPER_STEPS,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_at_end": timing.load_average(),
    }
    if options.out:
        Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        Path(options.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {options.out}")


if __name__ == "__main__":
    cli.run(DeviceReportOptions, main)
