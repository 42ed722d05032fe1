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

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import cli, timing
from invariance_tf import adversaries, data, evaluation, networks, precision, transforms
from invariance_tf.model import InvarianceModel
from invariance_tf.options import check, option

K = 10
INFERENCE_BATCH_MULTIPLES = (1, 2, 5, 10)


@dataclasses.dataclass(frozen=True)
class StepLimitsOptions:
    """The flags of `benchmarks.step_limits`."""

    network: str = option(
        "resnet9", "the CPU scale's ResNet-9 (width 16) or the paper family's ResNet", choices=("resnet9", "resnet")
    )
    resnet_n: int = option(1, "with --network=resnet: ResNet-(6n+2)")
    batch_size: int = option(128, "originals per training step")
    steps: int = option(10, "timed steps per measurement")
    precision: str = option("auto", "dtype policy of the networks", choices=precision.CHOICES)
    grid_examples: int = option(200, "test images of the grid timings")
    data_dir: str = option(str(timing.DATA_DIR), "CIFAR-10 ImageFolder root")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                (name, getattr(self, name) >= 1, "must be >= 1")
                for name in ("resnet_n", "batch_size", "steps", "grid_examples")
            ],
        )


def build_network(options: StepLimitsOptions) -> keras.Model:
    """The benchmark's network under its dtype policy."""
    kwargs = {"width": 16} if options.network == "resnet9" else {"n": options.resnet_n}
    with networks.dtype_policy(precision.resolve(options.precision).policy):
        return networks.build(options.network, weight_decay=5e-4, **kwargs)


def inference_seconds_per_image(network: keras.Model, images: np.ndarray, batch_size: int) -> float:
    """The fastest inference-mode forward pass per image over batch sizes `batch_size` x 1, 2, 5, 10."""
    best = float("inf")
    for multiple in INFERENCE_BATCH_MULTIPLES:
        size = batch_size * multiple
        batch = tf.constant(np.resize(images, (size, *images.shape[1:])), tf.float32)
        forward = tf.function(lambda x: network(x, training=False))
        best = min(best, timing.median_times(lambda forward=forward, batch=batch: forward(batch).numpy())[0] / size)
    return best


def plain_train_step_seconds(
    options: StepLimitsOptions, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> float:
    """Median plain `keras.Model.fit` step on `batch_size` images."""
    network = timing.compile_plain(build_network(options))
    return timing.median_step(network, images, labels, batch_size, options.steps)


def method_step_seconds(options: StepLimitsOptions, images: np.ndarray, labels: np.ndarray, **kwargs) -> float:
    """Median `InvarianceModel` step with `kwargs` (adversary, ce_on, ...)."""
    model = InvarianceModel(build_network(options), seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    return timing.median_step(model, images, labels, options.batch_size, options.steps)


def grid_seconds(network: keras.Model, images: np.ndarray, labels: np.ndarray, resampling: str) -> float:
    """Wall time of the brute-force grid on `images`, after a warm-up on 2 of them."""
    evaluation.grid_accuracy(network, images[:2], labels[:2], method="brute", resampling=resampling)
    start = time.perf_counter()
    evaluation.grid_accuracy(network, images, labels, method="brute", resampling=resampling)
    return time.perf_counter() - start


def main(options: StepLimitsOptions) -> None:
    images, labels, _ = data.read_image_folder(options.data_dir, "train", per_class=64)
    images = images.astype(np.float32)
    b = options.batch_size
    per_image = inference_seconds_per_image(build_network(options), images, b)
    train = {n: plain_train_step_seconds(options, images, labels, n * b) for n in (1, 3)}
    print(
        f"{options.network}, batch {b}, {precision.resolve(options.precision).policy}, {precision.describe_machine()}"
    )
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
            measured[name] = method_step_seconds(options, images, labels, **kwargs)
            print(
                f"{name + ', ' + resampling:<52}{measured[name] * 1e3:>8.0f}ms{limit * 1e3:>8.0f}ms"
                f"{measured[name] / limit:>8.2f}"
            )
        print(
            f"  shared candidates / independent searches ({resampling}): "
            f"{measured['A.T.+KL, shared candidates'] / measured['A.T.+KL, independent searches (the reference)']:.2f}"
        )
    test_images, test_labels, _ = data.read_image_folder(
        options.data_dir, "test", per_class=-(-options.grid_examples // 10)
    )
    network = build_network(options)
    grid = {
        r: grid_seconds(network, test_images[: options.grid_examples], test_labels[: options.grid_examples], r)
        for r in transforms.RESAMPLINGS
    }
    print(
        f"brute grid on {options.grid_examples} test images: composed {grid['composed']:.1f} s, reference "
        f"{grid['reference']:.1f} s, reference / composed {grid['reference'] / grid['composed']:.2f}"
    )


if __name__ == "__main__":
    cli.run(StepLimitsOptions, main)
