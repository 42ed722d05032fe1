"""The A.T. and A.T.+KL training steps against their limits, and the grid's cost by resampling, in one run.

    python -m benchmarks.step_limits [--network resnet9] [--batch_size 128] [--steps 10] [--precision auto]

A step's *limit* is the work it cannot avoid: the k * B inference-mode
forward passes of its search (at the fastest inference batch size measured)
plus one plain Keras train step on the images its loss sees. For A.T. that is
k * B inference + a train step on B; for A.T.+KL with independent searches
(the reference's) 2 * k * B inference + a train step on 3B; with shared
candidates k * B + a train step on 3B. Prints each step's median time, its
limit and the ratio (goal <= 1.15), for the composed and the reference
resampling, and the saving of shared candidates. Then the grid attack (brute
force, 200 real test images) with the reference resampling against the
composed one.

Networks are the CPU scale's (ResNet-9, width 16) or the paper family's
(`--network resnet --resnet_n 1`), untrained; pixels are real CIFAR-10 images.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from benchmarks import DATA_DIR
from benchmarks.train_throughput import median_step
from invariance_tf import adversaries, data, evaluation, networks, precision, transforms
from invariance_tf.model import InvarianceModel

K = 10
INFERENCE_BATCH_MULTIPLES = (1, 2, 5, 10)


def build_network(args: argparse.Namespace) -> keras.Model:
    """The benchmark's network under its dtype policy."""
    kwargs = {"width": 16} if args.network == "resnet9" else {"n": args.resnet_n}
    with networks.dtype_policy(precision.resolve(args.precision).policy):
        return networks.build(args.network, weight_decay=5e-4, **kwargs)


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inference_seconds_per_image(network: keras.Model, images: np.ndarray, batch_size: int) -> float:
    """The fastest inference-mode forward pass per image over batch sizes `batch_size` x 1, 2, 5, 10."""
    best = float("inf")
    for multiple in INFERENCE_BATCH_MULTIPLES:
        size = batch_size * multiple
        batch = tf.constant(np.resize(images, (size, *images.shape[1:])), tf.float32)
        forward = tf.function(lambda x: network(x, training=False))
        best = min(best, median_seconds(lambda forward=forward, batch=batch: forward(batch).numpy()) / size)
    return best


def plain_train_step_seconds(
    args: argparse.Namespace, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> float:
    """Median plain `keras.Model.fit` step on `batch_size` images."""
    network = build_network(args)
    network.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return median_step(network, images, labels, batch_size, args.steps)


def method_step_seconds(args: argparse.Namespace, images: np.ndarray, labels: np.ndarray, **kwargs) -> float:
    """Median `InvarianceModel` step with `kwargs` (adversary, ce_on, ...)."""
    model = InvarianceModel(build_network(args), seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    return median_step(model, images, labels, args.batch_size, args.steps)


def grid_seconds(network: keras.Model, images: np.ndarray, labels: np.ndarray, resampling: str) -> float:
    """Wall time of the brute-force grid on `images`, after a warm-up on 2 of them."""
    evaluation.grid_accuracy(network, images[:2], labels[:2], method="brute", resampling=resampling)
    start = time.perf_counter()
    evaluation.grid_accuracy(network, images, labels, method="brute", resampling=resampling)
    return time.perf_counter() - start


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="resnet9", choices=["resnet9", "resnet"])
    parser.add_argument("--resnet_n", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="auto", choices=list(precision.CHOICES))
    parser.add_argument("--grid_examples", type=int, default=200)
    parser.add_argument("--data_dir", default=str(DATA_DIR))
    args = parser.parse_args(argv)
    for name in ("resnet_n", "batch_size", "steps", "grid_examples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)} is invalid: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    images, labels, _ = data.read_image_folder(args.data_dir, "train", per_class=64)
    images = images.astype(np.float32)
    b = args.batch_size
    per_image = inference_seconds_per_image(build_network(args), images, b)
    train = {n: plain_train_step_seconds(args, images, labels, n * b) for n in (1, 3)}
    print(f"{args.network}, batch {b}, {precision.resolve(args.precision).policy}, {precision.describe_machine()}")
    print(
        f"inference {per_image * 1e3:.3f} ms per image at the best batch; plain train step on {b}: "
        f"{train[1] * 1e3:.0f} ms, on {3 * b}: {train[3] * 1e3:.0f} ms"
    )
    print(f"{'step':<52}{'median':>10}{'limit':>10}{'ratio':>8}")
    for resampling in transforms.RESAMPLINGS:
        cases = {
            "A.T. (worst-of-10 w.r.t. CE, CE on x~)": (
                dict(adversary=adversaries.WorstOfK(k=K, resampling=resampling), ce_on="rob"),
                K * b * per_image + train[1],
            ),
            "A.T.+KL, independent searches (the reference)": (
                dict(
                    adversary=adversaries.WorstOfK(k=K, objective="kl", resampling=resampling),
                    ce_on="mix",
                    h="kl",
                    lambda_reg=8.0,
                    ce_adversary_objective="ce",
                ),
                2 * K * b * per_image + train[3],
            ),
            "A.T.+KL, shared candidates": (
                dict(
                    adversary=adversaries.WorstOfK(k=K, objective="kl", resampling=resampling, shared_candidates=True),
                    ce_on="mix",
                    h="kl",
                    lambda_reg=8.0,
                    ce_adversary_objective="ce",
                ),
                K * b * per_image + train[3],
            ),
        }
        measured = {}
        for name, (kwargs, limit) in cases.items():
            keras.backend.clear_session()
            measured[name] = method_step_seconds(args, images, labels, **kwargs)
            print(
                f"{name + ', ' + resampling:<52}{measured[name] * 1e3:>8.0f}ms{limit * 1e3:>8.0f}ms"
                f"{measured[name] / limit:>8.2f}"
            )
        print(
            f"  shared candidates / independent searches ({resampling}): "
            f"{measured['A.T.+KL, shared candidates'] / measured['A.T.+KL, independent searches (the reference)']:.2f}"
        )
    test_images, test_labels, _ = data.read_image_folder(args.data_dir, "test", per_class=-(-args.grid_examples // 10))
    network = build_network(args)
    grid = {
        r: grid_seconds(network, test_images[: args.grid_examples], test_labels[: args.grid_examples], r)
        for r in transforms.RESAMPLINGS
    }
    print(
        f"brute grid on {args.grid_examples} test images: composed {grid['composed']:.1f} s, reference "
        f"{grid['reference']:.1f} s, reference / composed {grid['reference'] / grid['composed']:.2f}"
    )


if __name__ == "__main__":
    main()
