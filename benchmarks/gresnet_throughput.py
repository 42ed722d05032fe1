"""Training throughput (images/s) of G-ResNet44 (p4) against planar ResNet44s, in one run.

Models: the paper's planar ResNet44 (`networks.build("resnet", n=7)`, widths
16-16-32-64), the reference's planar ResNet44 at widths 32/64/128 that the
G-ResNet is matched to in parameters, and G-ResNet44 on p4 (16/32/64
G-channels). Each trains on one fixed batch of random raw pixels with SGD
(momentum 0.9) through `train_on_batch`; the first `--warmup` steps (tracing
included) are not timed.

    python benchmarks/gresnet_throughput.py [--batch-size 128] [--steps 3] [--warmup 2]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from invariance_tf import networks
from invariance_tf.networks.g_resnet import g_resnet, planar_counterpart

BASELINE = "resnet44 16-16-32-64"
COUNTERPART = "z2 resnet44 32/64/128"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per model")
    return parser.parse_args()


def build_models() -> dict[str, keras.Model]:
    return {
        BASELINE: networks.build("resnet", n=7),
        COUNTERPART: planar_counterpart(44),
        "p4 g-resnet44 16/32/64": g_resnet(44, "p4"),
    }


def throughput(model: keras.Model, batch_size: int, steps: int, warmup: int) -> float:
    """Images per second of `train_on_batch` after `warmup` untimed steps."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(batch_size, *model.input_shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, size=batch_size)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    for _ in range(warmup):
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    rates = {}
    print(
        f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, backend {keras.backend.backend()}"
    )
    for name, model in build_models().items():
        rates[name] = throughput(model, args.batch_size, args.steps, args.warmup)
        print(
            f"{name:26s} {model.count_params():>10,d} params  {rates[name]:9.1f} images/s  "
            f"{args.batch_size / rates[name] * 1e3:8.0f} ms/step",
            flush=True,
        )
    print(f"{'throughput ratio':26s} {'/ ' + BASELINE:>26s} {'/ ' + COUNTERPART:>26s}")
    for name, rate in rates.items():
        print(f"{name:26s} {rate / rates[BASELINE]:26.3f} {rate / rates[COUNTERPART]:26.3f}")


if __name__ == "__main__":
    main()
