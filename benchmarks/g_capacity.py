"""Whether the paper's capacity ratio fits a G-row at CPU scale: a projection from one run's measured step times.

In the paper, G-ResNet44 (Cohen & Welling's p4m network, 2,622,878 parameters) had about 5.65x the parameters of
the other rows' ResNet-32 (464,154). Issue #35 asks for a third G-row at that ratio to ResNet-9 width 16 if it
trains within about 3 hours on 2 cores. The G-ResNet-9 p4m at the width whose parameter count is nearest the ratio
is timed against the fair row's (width 16) in one run: both train on one fixed batch of random raw pixels under
the dtype policy `--precision=auto` picks here, in alternating rounds of `--steps` steps (so that load, which
drifts, falls on both alike), and the step-time ratio is the median over rounds. The projection is the fair row's
fastest recorded epoch (the G-row selection's candidates: the same network, protocol and 25,000 training images)
times that ratio times the CPU regime's 24 epochs. It over-states a little: the transformations of each step cost
the same at either width, and the ratio applies to them too. The JSON record goes to `--out`.

    python -m benchmarks.g_capacity [--steps 3] [--rounds 5] [--batch_size 128]
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from benchmarks.common import cli, protocols, timing
from invariance_tf import files, networks, precision
from invariance_tf.networks import cost
from invariance_tf.options import check, option

# Cohen & Welling's p4m G-ResNet44 over the paper's ResNet-32 (tests/test_g_networks.py checks both counts).
PAPER_RATIO = 2_622_878 / 464_154
RESNET9_WIDTH16 = 412_954
FAIR_WIDTH = 16
BUDGET_HOURS = 3.0
EPOCHS = 24
SELECTION = protocols.REPO_ROOT / "docs" / "results" / "cifar10_grn_selection"


@dataclasses.dataclass(frozen=True)
class CapacityOptions:
    """The flags of `benchmarks.g_capacity`."""

    batch_size: int = option(128, "images per training step")
    steps: int = option(3, "timed training steps per network and round")
    rounds: int = option(5, "alternating rounds (the ratio is their median)")
    warmup: int = option(2, "untimed training steps per network (tracing included)")
    out: str = option("docs/results/g_capacity/g_capacity.json", "the JSON record; empty = print only")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                ("batch_size", self.batch_size >= 1, "must be >= 1"),
                ("steps", self.steps >= 1, "must be >= 1"),
                ("rounds", self.rounds >= 1, "must be >= 1"),
                ("warmup", self.warmup >= 0, "must be >= 0"),
            ],
        )


def g_resnet9(width: int) -> keras.Model:
    """The fair G-row's network (p4m, Cohen & Welling's flatten head) at `width`."""
    return networks.build("g_resnet9", width=width, group="p4m", head="flatten")


def capacity_width(ratio: float = PAPER_RATIO) -> int:
    """The width whose p4m G-ResNet-9 has the parameter count nearest `ratio` x ResNet-9 width 16's.

    Parameters grow with the width (about as its square), so the search walks from that estimate to the nearest.
    """
    target = ratio * RESNET9_WIDTH16

    def miss(width: int) -> float:
        return abs(cost.parameter_count(g_resnet9(width)) - target)

    width = round(FAIR_WIDTH * ratio**0.5)
    for step in (1, -1):
        while miss(width + step) < miss(width):
            width += step
    return width


def fastest_fair_epoch() -> float:
    """The fastest epoch (seconds) any finished G-row selection candidate recorded."""
    epochs = [min(json.loads(path.read_text())) for path in SELECTION.glob("*_seed*/epoch_seconds.json")]
    if not epochs:
        raise FileNotFoundError(f"no G-row selection run under {SELECTION}: run benchmarks.g_row_selection first")
    return min(epochs)


def step_seconds(models: dict[int, keras.Model], options: CapacityOptions) -> dict[int, list[float]]:
    """Per width, the seconds of each round's `options.steps` steps, the widths' rounds alternating."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(options.batch_size, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, size=options.batch_size)
    for model in models.values():
        timing.compile_plain(model, learning_rate=0.1)
        for _ in range(options.warmup):
            model.train_on_batch(images, labels)
    seconds = {width: [] for width in models}
    for _ in range(options.rounds):
        for width, model in models.items():
            start = time.perf_counter()
            for _ in range(options.steps):
                model.train_on_batch(images, labels)
            seconds[width].append(time.perf_counter() - start)
    return seconds


def main(options: CapacityOptions) -> None:
    fair_epoch = fastest_fair_epoch()
    width = capacity_width()
    policy = precision.resolve(precision.AUTO).policy
    with networks.dtype_policy(policy):
        models = {FAIR_WIDTH: g_resnet9(FAIR_WIDTH), width: g_resnet9(width)}
    seconds = step_seconds(models, options)
    ratio = statistics.median(wide / fair for wide, fair in zip(seconds[width], seconds[FAIR_WIDTH], strict=True))
    projected_hours = fair_epoch * ratio * EPOCHS / 3600
    record = {
        "paper_ratio": PAPER_RATIO,
        "widths": {
            str(w): {"parameters": cost.parameter_count(m), "macs_per_image": cost.macs_per_image(m)}
            for w, m in models.items()
        },
        "capacity_width": width,
        "policy": policy,
        "batch_size": options.batch_size,
        "round_seconds": {str(w): s for w, s in seconds.items()},
        "step_time_ratio": ratio,
        "fair_fastest_epoch_seconds": fair_epoch,
        "epochs": EPOCHS,
        "projected_hours": projected_hours,
        "budget_hours": BUDGET_HOURS,
        "fits": projected_hours <= BUDGET_HOURS,
        "load_average": timing.load_average(),
        "machine": precision.describe_machine(),
    }
    parameters = record["widths"][str(width)]["parameters"]
    print(
        f"width {width}: {parameters:,} parameters ({parameters / RESNET9_WIDTH16:.2f}x ResNet-9 w16's), "
        f"step time {ratio:.2f}x the fair row's; projected {projected_hours:.1f} h for {EPOCHS} epochs "
        f"(budget {BUDGET_HOURS:g} h) at load {record['load_average']}"
    )
    if options.out:
        files.write_text(Path(options.out), json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    cli.run(CapacityOptions, main)
