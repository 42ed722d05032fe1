"""Speed of the grid-attack evaluation on ResNet-8 and 500 real CIFAR-10 test images, in one run.

    python -m benchmarks.grid_eval [--train_seconds 60] [--batch_size 128] [--data_dir DIR]

Trains a ResNet-8 for about a minute on real CIFAR-10 training images, then prints

(a) brute-force grid time / (775 x the fastest plain forward pass over the
    500 images, over batch sizes and XLA on/off); goal <= 1.15. Each forward
    time is the median of 5 runs, timed before and after the grid run; the
    faster is used.
(b) early-exit grid time / brute-force grid time; goal <= 0.35. Both must
    give the same per-example answers (asserted).

Times are wall-clock seconds including tracing. CPU-time ratios (this
process's user + system time) are printed too: when other processes share
the cores, wall time varies with their load from one phase to the next,
while the CPU time a phase needs stays about the same.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from benchmarks import DATA_DIR
from invariance_tf import data, evaluation, networks

FORWARD_BATCH_SIZES = (50, 100, 250, 500)


class Clock:
    """Wall and process CPU seconds since creation."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class StopAfter(keras.callbacks.Callback):
    """Stops training once `seconds` of wall time have passed."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.model.stop_training = time.perf_counter() - self.start > self.seconds


def train(data_dir: Path, seconds: float) -> keras.Model:
    images, labels, _ = data.read_image_folder(data_dir, "train", per_class=2000)
    keras.utils.set_random_seed(0)
    model = networks.build("resnet", n=1)
    model.compile(
        keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    history = model.fit(
        images.astype(np.float32), labels, batch_size=128, epochs=1000, verbose=0, callbacks=[StopAfter(seconds)]
    )
    print(
        f"trained ResNet-8 for {len(history.epoch)} epochs of {len(images)} images "
        f"(train accuracy {history.history['accuracy'][-1]:.3f})"
    )
    return model


def fastest_forward(model: keras.Model, images: tf.Tensor, repeats: int = 5) -> tuple[float, float, str]:
    """Median (wall, CPU) seconds to classify all `images` at the fastest batch size and XLA setting."""
    timings = {}
    for jit in (False, True):
        forward = tf.function(lambda x: model(x, training=False), jit_compile=jit)
        for batch_size in FORWARD_BATCH_SIZES:
            batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
            forward(batches[0])
            runs = []
            for _ in range(repeats):
                clock = Clock()
                for batch in batches:
                    forward(batch).numpy()
                runs.append(clock.elapsed())
            timings[f"batch {batch_size}{' XLA' if jit else ''}"] = tuple(np.median(runs, axis=0))
    print(
        f"  forward pass over {len(images)} images, median of {repeats} (wall s):",
        ", ".join(f"{name}: {wall:.4f}" for name, (wall, _) in timings.items()),
    )
    name = min(timings, key=lambda key: timings[key][0])
    return (*timings[name], name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_seconds", type=float, default=60.0)
    parser.add_argument(
        "--batch_size",
        type=int,
        default=evaluation.default_batch_size(),
        help="(image, transformation) pairs per model call in the grid evaluation",
    )
    parser.add_argument("--data_dir", type=Path, default=DATA_DIR, help="CIFAR-10 ImageFolder root")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    model = train(args.data_dir, args.train_seconds)
    images, labels, _ = data.read_image_folder(args.data_dir, "test", per_class=50)
    images_tensor = tf.constant(images.astype(np.float32))
    print(f"clean accuracy on {len(images)} test images: {evaluation.clean_accuracy(model, images, labels):.3f}")

    before = fastest_forward(model, images_tensor)
    clock = Clock()
    brute = evaluation.grid_accuracy(model, images, labels, method="brute", batch_size=args.batch_size)
    brute_wall, brute_cpu = clock.elapsed()
    after = fastest_forward(model, images_tensor)
    forward_wall, forward_cpu, forward_name = min(before, after)
    num_transforms = len(brute.per_transform_accuracy)

    clock = Clock()
    early = evaluation.grid_accuracy(model, images, labels, method="early_exit", batch_size=args.batch_size)
    early_wall, early_cpu = clock.elapsed()
    assert np.array_equal(early.correct, brute.correct), "early_exit and brute disagree"

    print(f"grid accuracy {brute.accuracy:.3f} (early_exit {early.accuracy:.3f}, identical per example)")
    print(f"forward pass, 500 images, fastest ({forward_name}): {forward_wall:.4f} s wall, {forward_cpu:.4f} s CPU")
    print(
        f"brute grid ({num_transforms} transformations, batch {args.batch_size}): "
        f"{brute_wall:.2f} s wall, {brute_cpu:.2f} s CPU"
    )
    print(
        f"early_exit grid: {early_wall:.2f} s wall, {early_cpu:.2f} s CPU, "
        f"{early.evaluations} of {brute.evaluations} pairs classified"
    )
    print(
        f"(a) brute / ({num_transforms} x forward) = {brute_wall / (num_transforms * forward_wall):.3f} wall, "
        f"{brute_cpu / (num_transforms * forward_cpu):.3f} CPU   (goal <= 1.15)"
    )
    print(
        f"(b) early_exit / brute = {early_wall / brute_wall:.3f} wall, {early_cpu / brute_cpu:.3f} CPU   (goal <= 0.35)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
