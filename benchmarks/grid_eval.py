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

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import cli, timing
from invariance_tf import data, evaluation
from invariance_tf.options import check, option

FORWARD_BATCH_SIZES = (50, 100, 250, 500)


@dataclasses.dataclass(frozen=True)
class GridEvalOptions:
    """The flags of `benchmarks.grid_eval`."""

    train_seconds: float = option(60.0, "wall seconds of ResNet-8 training before the timings")
    batch_size: int = option(
        0, "(image, transformation) pairs per model call in the grid evaluation (0 = auto: 128 on CPU, 1024 on GPU)"
    )
    data_dir: str = option(str(timing.DATA_DIR), "CIFAR-10 ImageFolder root")

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                ("train_seconds", self.train_seconds > 0, "must be > 0"),
                ("batch_size", self.batch_size >= 0, "must be >= 0 (0 = auto)"),
            ],
        )


def fastest_forward(model: keras.Model, images: tf.Tensor, repeats: int = 5) -> tuple[float, float, str]:
    """Median (wall, CPU) seconds to classify all `images` at the fastest batch size and XLA setting."""
    timings = {}
    for jit in (False, True):
        forward = tf.function(lambda x: model(x, training=False), jit_compile=jit)
        for batch_size in FORWARD_BATCH_SIZES:
            batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
            forward(batches[0])
            timings[f"batch {batch_size}{' XLA' if jit else ''}"] = timing.median_times(
                lambda forward=forward, batches=batches: [forward(batch).numpy() for batch in batches],
                repeats,
                warmup=0,
            )
    print(
        f"  forward pass over {len(images)} images, median of {repeats} (wall s):",
        ", ".join(f"{name}: {wall:.4f}" for name, (wall, _) in timings.items()),
    )
    name = min(timings, key=lambda key: timings[key][0])
    return (*timings[name], name)


def main(options: GridEvalOptions) -> None:
    print(f"load average at start: {timing.load_average()}")
    batch_size = options.batch_size or evaluation.default_batch_size()
    train_images, train_labels, _ = data.read_image_folder(options.data_dir, "train", per_class=2000)
    model = timing.train_resnet8(train_images, train_labels, options.train_seconds)
    images, labels, _ = data.read_image_folder(options.data_dir, "test", per_class=50)
    images_tensor = tf.constant(images.astype(np.float32))
    print(f"clean accuracy on {len(images)} test images: {evaluation.clean_accuracy(model, images, labels):.3f}")

    before = fastest_forward(model, images_tensor)
    clock = timing.Clock()
    brute = evaluation.grid_accuracy(model, images, labels, method="brute", batch_size=batch_size)
    brute_wall, brute_cpu = clock.elapsed()
    after = fastest_forward(model, images_tensor)
    forward_wall, forward_cpu, forward_name = min(before, after)
    num_transforms = len(brute.per_transform_accuracy)

    clock = timing.Clock()
    early = evaluation.grid_accuracy(model, images, labels, method="early_exit", batch_size=batch_size)
    early_wall, early_cpu = clock.elapsed()
    assert np.array_equal(early.correct, brute.correct), "early_exit and brute disagree"

    print(f"grid accuracy {brute.accuracy:.3f} (early_exit {early.accuracy:.3f}, identical per example)")
    print(f"forward pass, 500 images, fastest ({forward_name}): {forward_wall:.4f} s wall, {forward_cpu:.4f} s CPU")
    print(
        f"brute grid ({num_transforms} transformations, batch {batch_size}): "
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
    print(f"load average at end: {timing.load_average()}")


if __name__ == "__main__":
    cli.run(GridEvalOptions, main)
