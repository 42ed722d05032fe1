"""The A.T. and A.T.+KL training steps with and without XLA, each against its limit, in one run.

    python -m benchmarks.xla_step [--network resnet9] [--batch_size 64] [--steps 5] [--out docs/results/xla_step.json]

For float32 and the policy `--precision=auto` picks on this machine, times the A.T. step (worst-of-10 w.r.t. CE,
CE on x~) and the A.T.+KL step (independent worst-of-10 searches w.r.t. KL and CE, the reference's) compiled with
XLA (`jit_compile=True`) and not, and sets each against its limit (`benchmarks.step_limits`: the search's
inference passes plus one plain train step on the images the loss sees). The variants are interleaved in rounds,
the second round in reverse order, so that the load of other processes on shared cores weighs on them alike; a
variant's time is the median of its rounds' median steps. Writes every time and ratio as JSON (`--out`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import json
import statistics
from pathlib import Path

import keras
import numpy as np

from benchmarks import step_limits
from benchmarks.common import cli, timing
from invariance_tf import adversaries, data, precision
from invariance_tf.model import InvarianceModel
from invariance_tf.options import check, option

K = 10
STEPS = {
    "A.T.": dict(ce_on="rob"),
    "A.T.+KL": dict(ce_on="mix", h="kl", lambda_reg=8.0, ce_adversary_objective="ce"),
}
"""The timed steps' `InvarianceModel` arguments besides the adversary (worst-of-10, w.r.t. CE or KL)."""


@dataclasses.dataclass(frozen=True)
class XlaStepOptions:
    """The flags of `benchmarks.xla_step`."""

    network: str = option(
        "resnet9", "the CPU scale's ResNet-9 (width 16) or the paper family's ResNet", ("resnet9", "resnet")
    )
    resnet_n: int = option(1, "with --network=resnet: ResNet-(6n+2)")
    batch_size: int = option(64, "originals per training step (the paper's 64)")
    steps: int = option(5, "timed steps per measurement")
    rounds: int = option(2, "interleaved rounds over all variants")
    resampling: str = option("reference", "resampling of the adversary and x~", ("composed", "reference"))
    out: str = option("", "JSON file to write the measurements to (empty: print only)")
    data_dir: str = option(str(timing.DATA_DIR), "CIFAR-10 ImageFolder root")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(self, [(n, getattr(self, n) >= 1, "must be >= 1") for n in ("resnet_n", "batch_size", "steps", "rounds")])


def model_arguments(step: str, resampling: str) -> dict:
    """`InvarianceModel` arguments of `step` ("A.T." or "A.T.+KL") with worst-of-`K` resampled by `resampling`."""
    objective = "ce" if step == "A.T." else "kl"
    return {"adversary": adversaries.WorstOfK(k=K, objective=objective, resampling=resampling), **STEPS[step]}


def step_seconds(options: XlaStepOptions, policy: str, step: str, jit: bool, images, labels) -> float:
    """Median wall seconds of one `InvarianceModel` step of `step` under `policy`, XLA on or off."""
    keras.backend.clear_session()
    limits_options = step_limits.StepLimitsOptions(
        network=options.network, resnet_n=options.resnet_n, batch_size=options.batch_size, precision=policy
    )
    model = InvarianceModel(
        step_limits.build_network(limits_options), seed=0, **model_arguments(step, options.resampling)
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
    return timing.median_step(model, images, labels, options.batch_size, options.steps)


def limits_seconds(options: XlaStepOptions, policy: str, images, labels) -> dict[str, float]:
    """Each step's limit (seconds) under `policy`: k * B (A.T.) or 2 * k * B (A.T.+KL) inference + a train step."""
    limits_options = step_limits.StepLimitsOptions(
        network=options.network, resnet_n=options.resnet_n, batch_size=options.batch_size, precision=policy
    )
    b = options.batch_size
    per_image = step_limits.inference_seconds_per_image(step_limits.build_network(limits_options), images, b)
    train = {n: step_limits.plain_train_step_seconds(limits_options, images, labels, n * b) for n in (1, 3)}
    return {"A.T.": K * b * per_image + train[1], "A.T.+KL": 2 * K * b * per_image + train[3]}


def main(options: XlaStepOptions) -> None:
    images, labels, _ = data.read_image_folder(options.data_dir, "train", per_class=32)
    images = images.astype(np.float32)
    policies = list(dict.fromkeys(["float32", precision.resolve("auto").policy]))
    variants = [(policy, step, jit) for policy in policies for step in STEPS for jit in (False, True)]
    times: dict[tuple, list[float]] = {variant: [] for variant in variants}
    for round_index in range(options.rounds):
        for variant in variants if round_index % 2 == 0 else variants[::-1]:
            times[variant].append(step_seconds(options, *variant, images, labels))
            print(f"round {round_index}: {variant} {times[variant][-1] * 1e3:.0f} ms, load {timing.load_average()}")
    limits = {policy: limits_seconds(options, policy, images, labels) for policy in policies}
    rows = []
    for policy, step, jit in variants:
        seconds = statistics.median(times[(policy, step, jit)])
        rows.append(
            {
                "precision": policy,
                "step": step,
                "xla": jit,
                "step_ms": round(seconds * 1e3, 1),
                "rounds_ms": [round(t * 1e3, 1) for t in times[(policy, step, jit)]],
                "limit_ms": round(limits[policy][step] * 1e3, 1),
                "step_over_limit": round(seconds / limits[policy][step], 3),
            }
        )
    for row in rows:
        if row["xla"]:
            plain = next(
                r for r in rows if r["precision"] == row["precision"] and r["step"] == row["step"] and not r["xla"]
            )
            row["xla_over_no_xla"] = round(row["step_ms"] / plain["step_ms"], 3)
    record = {
        "command": "python -m benchmarks.xla_step "
        + " ".join(
            f"--{f.name}={getattr(options, f.name)}" for f in dataclasses.fields(options) if f.name != "data_dir"
        ),
        "network": options.network if options.network == "resnet9" else f"resnet-{6 * options.resnet_n + 2}",
        "batch_size": options.batch_size,
        "k": K,
        "machine": precision.describe_machine(),
        "cpus": os.cpu_count(),
        "auto_precision": precision.resolve("auto")._asdict(),
        "load_average_at_end": timing.load_average(),
        "note": "machine shared with a training run: the ratios within this run are the result, not absolute times",
        "rows": rows,
    }
    print(json.dumps(record, indent=1))
    if options.out:
        Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        Path(options.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    cli.run(XlaStepOptions, main)
