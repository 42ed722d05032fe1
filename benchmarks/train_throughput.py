"""Training step time of the regularised model against plain Keras, measured in one run.

    python -m benchmarks.train_throughput [--resnet_n 1] [--steps 20]

Prints median step times (after warm-up) and the ratios the project tracks:
custom train_step (lambda = 0, no adversary) / plain `keras.Model.fit`, and
A.T.+KL / A.T. (worst-of-10; A.T.+KL: the originals, their worst of 10 w.r.t.
KL for the penalty and an independent worst of 10 w.r.t. CE for the CE term)
with equal numbers of originals per step, as the flagfiles have them, and with
half as many for A.T.+KL; with and without XLA where it compiles.
`benchmarks.step_limits` sets these steps against their limits.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import functools

import keras
import numpy as np

from benchmarks.common import cli, timing
from invariance_tf import adversaries, data, networks
from invariance_tf.model import InvarianceModel
from invariance_tf.options import check, option


@dataclasses.dataclass(frozen=True)
class TrainThroughputOptions:
    """The flags of `benchmarks.train_throughput`."""

    resnet_n: int = option(1, "the paper family's ResNet-(6n+2)")
    steps: int = option(20, "timed steps per measurement")
    data_dir: str = option(str(timing.DATA_DIR), "CIFAR-10 ImageFolder root")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(self, [("resnet_n", self.resnet_n >= 1, "must be >= 1"), ("steps", self.steps >= 1, "must be >= 1")])


def plain_keras(n: int, jit: bool) -> keras.Model:
    return timing.compile_plain(networks.build("resnet", n=n, weight_decay=2e-4), jit_compile=jit)


def regularised(n: int, jit: bool, **kwargs) -> keras.Model:
    model = InvarianceModel(networks.build("resnet", n=n, weight_decay=2e-4), seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
    return model


def main(options: TrainThroughputOptions) -> None:
    images, labels, _ = data.read_image_folder(options.data_dir, "train", per_class=128)
    images = images.astype(np.float32)
    n = options.resnet_n
    at = dict(adversary=adversaries.WorstOfK(k=10, objective="ce"), ce_on="rob")
    at_kl = dict(
        adversary=adversaries.WorstOfK(k=10, objective="kl"),
        ce_on="mix",
        h="kl",
        lambda_reg=8.0,
        ce_adversary_objective="ce",
    )
    rows = {}
    for jit in (False, True):
        suffix = " +XLA" if jit else ""
        cases = {
            "plain keras fit (batch 128)": (functools.partial(plain_keras, n, jit), 128),
            "InvarianceModel, no adversary, lambda=0 (batch 128)": (functools.partial(regularised, n, jit), 128),
            "A.T. worst-of-10 (batch 128)": (functools.partial(regularised, n, jit, **at), 128),
            "A.T.+KL worst-of-10 (64 + 2 x 64 transformed)": (functools.partial(regularised, n, jit, **at_kl), 64),
            "A.T.+KL worst-of-10 (128 + 2 x 128 transformed)": (functools.partial(regularised, n, jit, **at_kl), 128),
        }
        for name, (build, batch_size) in cases.items():
            try:
                rows[name + suffix] = timing.median_step(build(), images, labels, batch_size, options.steps)
            except Exception as error:  # XLA may not compile an op on this platform: report, do not stop.
                rows[name + suffix] = float("nan")
                print(f"{name + suffix}: failed ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    print(f"\nResNet-{6 * n + 2}, median step time over {options.steps} steps, {os.cpu_count()} CPU cores")
    for name, seconds in rows.items():
        print(f"  {name:<60} {seconds * 1000:8.1f} ms")
    for suffix in ("", " +XLA"):
        base = rows["plain keras fit (batch 128)" + suffix]
        custom = rows["InvarianceModel, no adversary, lambda=0 (batch 128)" + suffix]
        at_time = rows["A.T. worst-of-10 (batch 128)" + suffix]
        print(f"\nratios{suffix or ' (no XLA)'}:")
        print(f"  custom train_step / plain fit                     {custom / base:.3f}  (goal <= 1.10)")
        print(
            f"  A.T.+KL / A.T., half the originals (64+2x64 vs 128) "
            f"{rows['A.T.+KL worst-of-10 (64 + 2 x 64 transformed)' + suffix] / at_time:.3f}"
        )
        print(
            f"  A.T.+KL / A.T., equal originals (128+2x128 vs 128) "
            f"{rows['A.T.+KL worst-of-10 (128 + 2 x 128 transformed)' + suffix] / at_time:.3f}"
        )


if __name__ == "__main__":
    cli.run(TrainThroughputOptions, main)
