"""Training throughput (images/s) of G-ResNet44 (p4) against planar ResNet44s, in one run.

Models: the paper's planar ResNet44 (`networks.build("resnet", n=7)`, widths
16-16-32-64), the reference's planar ResNet44 at widths 32/64/128 that the
G-ResNet is matched to in parameters, and G-ResNet44 on p4 (16/32/64
G-channels). Each trains on one fixed batch of random raw pixels with SGD
(momentum 0.9) through `train_on_batch`; the first `--warmup` steps (tracing
included) are not timed.

    python -m benchmarks.gresnet_throughput [--batch_size 128] [--steps 3] [--warmup 2]
"""

from __future__ import annotations

import dataclasses

import keras

from benchmarks.common import cli, timing
from invariance_tf import networks
from invariance_tf.networks.g_resnet import g_resnet, planar_counterpart
from invariance_tf.options import check, option

BASELINE = "resnet44 16-16-32-64"
COUNTERPART = "z2 resnet44 32/64/128"


@dataclasses.dataclass(frozen=True)
class GResNetThroughputOptions:
    """The flags of `benchmarks.gresnet_throughput`."""

    batch_size: int = option(128, "images per training step")
    steps: int = option(3, "timed training steps per model")
    warmup: int = option(2, "untimed training steps per model")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                ("batch_size", self.batch_size >= 1, "must be >= 1"),
                ("steps", self.steps >= 1, "must be >= 1"),
                ("warmup", self.warmup >= 0, "must be >= 0"),
            ],
        )


def build_models() -> dict[str, keras.Model]:
    return {
        BASELINE: networks.build("resnet", n=7),
        COUNTERPART: planar_counterpart(44),
        "p4 g-resnet44 16/32/64": g_resnet(44, "p4"),
    }


def main(options: GResNetThroughputOptions) -> None:
    rates = {}
    print(
        f"batch {options.batch_size}, {options.warmup} warm-up + {options.steps} timed steps, "
        f"backend {keras.backend.backend()}"
    )
    for name, model in build_models().items():
        rates[name] = timing.training_throughput(model, options.batch_size, options.steps, options.warmup)
        print(
            f"{name:26s} {model.count_params():>10,d} params  {rates[name]:9.1f} images/s  "
            f"{options.batch_size / rates[name] * 1e3:8.0f} ms/step",
            flush=True,
        )
    print(f"{'throughput ratio':26s} {'/ ' + BASELINE:>26s} {'/ ' + COUNTERPART:>26s}")
    for name, rate in rates.items():
        print(f"{name:26s} {rate / rates[BASELINE]:26.3f} {rate / rates[COUNTERPART]:26.3f}")


if __name__ == "__main__":
    cli.run(GResNetThroughputOptions, main)
