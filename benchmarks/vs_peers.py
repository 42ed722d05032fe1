"""This project's grid evaluation against foolbox's SpatialAttack: same model, same images, one run.

    pip install -e ".[peers]"
    python -m benchmarks.vs_peers [--model PATH] [--examples 500] [--train_seconds 60]

Without --model, trains a ResNet-8 for --train_seconds on real CIFAR-10 training
images and one randomly transformed copy of each (data augmentation with the
grid's transformations, so some test images survive the grid). Then prints

- wall and CPU seconds of this project's early-exit grid, of the refined
  attack on top of it, and of foolbox 3's `SpatialAttack(grid_search=True)`
  with the same grid (5 translations per axis in [-3, 3] px, 31 angles in
  [-30, 30] deg), and the ratio foolbox / ours;
- the robust accuracy each reports, and how much the grid overestimates the
  robust accuracy in the continuous box (grid minus refined).

The two grids are not the same set of images, so their accuracies differ:
- foolbox translates, then rotates (it samples the input at R p + t, so its
  shift is in the input's frame and turns with the angle); we rotate about
  the centre, then translate (the shift is in the output's frame);
- foolbox converts pixels to its [-1, 1] coordinates with n/2 instead of
  (n-1)/2, so its shifts are 31/32 of the nominal pixels on 32 x 32 images;
- foolbox's bilinear sampler gives 0 at and beyond the last row and column
  (both corner indices clip to n - 1 and their weights cancel), so even its
  untransformed image loses them; ours is zero only outside the image;
- foolbox evaluates each transformation on the whole batch until every image
  of the batch is broken; ours stops per example at its first mistake and
  tries the most spread-out transformations first.
Both count an image misclassified without a transformation as broken.
Times are wall-clock seconds including tracing, after one warm-up call of
each tool on a few images; CPU seconds (this process) are printed too because
other processes sharing the cores change wall time from one phase to the next.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import sys

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import cli, timing
from invariance_tf import data, evaluation, transforms
from invariance_tf.options import check, option

FOOLBOX_HINT = 'install it with: pip install -e ".[peers]" (foolbox 3.3.x)'


@dataclasses.dataclass(frozen=True)
class VsPeersOptions:
    """The flags of `benchmarks.vs_peers`."""

    model: str | None = option(None, "a .keras file or SavedModel folder; default: train a ResNet-8")
    input_range: str = option("0-255", "pixel scale the model expects", choices=evaluation.INPUT_RANGES)
    data_dir: str = option(str(timing.DATA_DIR), "CIFAR-10 ImageFolder root")
    examples: int = option(500, "test images (class-balanced)")
    train_seconds: float = option(60.0, "wall seconds of ResNet-8 training without --model")
    batch_size: int = option(
        0, "ours: pairs per model call; foolbox: images per attack call (0 = auto: 128 on CPU, 1024 on GPU)"
    )

    def validate(self) -> None:
        """Raises ValueError naming the first bad flag."""
        check(
            self,
            [
                (
                    "examples",
                    self.examples >= 10 and self.examples % 10 == 0,
                    "must be a multiple of 10 (classes), >= 10",
                ),
                ("train_seconds", self.train_seconds > 0, "must be > 0"),
                ("batch_size", self.batch_size >= 0, "must be >= 0 (0 = auto)"),
            ],
        )


def import_foolbox():
    """foolbox, or exit with one line saying why it cannot be used here."""
    try:
        import foolbox
    except ImportError as error:
        sys.exit(f"error: foolbox is not importable ({error}); {FOOLBOX_HINT}")
    if not foolbox.__version__.startswith("3."):
        sys.exit(f"error: this benchmark needs foolbox 3.x; found {foolbox.__version__}; {FOOLBOX_HINT}")
    return foolbox


def train(data_dir: str, seconds: float) -> keras.Model:
    """ResNet-8 trained on 20,000 images: 10,000 training images and one random grid-box transform of each."""
    images, labels, _ = data.read_image_folder(data_dir, "train", per_class=1000)
    images = images.astype(np.float32)
    moved = transforms.transform(images, transforms.sample_uniform(len(images), seed=[0, 0])).numpy()
    return timing.train_resnet8(np.concatenate([images, moved]), np.tile(labels, 2), seconds)


def foolbox_grid(foolbox, model, images: np.ndarray, labels: np.ndarray, batch_size: int) -> np.ndarray:
    """Per image whether foolbox's grid SpatialAttack fails to break it (robust), [N] bool."""
    wrapped = foolbox.TensorFlowModel(model, bounds=(0, 255))
    attack = foolbox.attacks.SpatialAttack(
        max_translation=3, max_rotation=30, num_translations=5, num_rotations=31, grid_search=True
    )
    broken = []
    for start in range(0, len(images), batch_size):
        # int64 labels: eagerpy 0.30 casts mixed dtypes with np.find_common_type, removed in NumPy 2.
        _, _, success = attack(
            wrapped,
            tf.constant(images[start : start + batch_size]),
            tf.constant(labels[start : start + batch_size], tf.int64),
        )
        broken.append(success.numpy())
    return ~np.concatenate(broken)


def main(options: VsPeersOptions) -> None:
    """Times both evaluators on one model and one set of test images; prints the table of the docstring."""
    foolbox = import_foolbox()
    batch_size = options.batch_size or evaluation.default_batch_size()
    print(
        f"foolbox {foolbox.__version__}, TensorFlow {tf.__version__}, NumPy {np.__version__}; "
        f"load average at start: {timing.load_average()}"
    )

    model = (
        evaluation.load_classifier(options.model, options.input_range)
        if options.model
        else train(options.data_dir, options.train_seconds)
    )
    images, labels, _ = data.read_image_folder(options.data_dir, "test", per_class=options.examples // 10)
    images = images.astype(np.float32)
    evaluation.check_classifier(model, images, num_classes=10)
    print(f"clean accuracy on {len(images)} test images: {evaluation.clean_accuracy(model, images, labels):.3f}")

    warm = slice(0, 8)
    evaluation.refine(
        model,
        images[warm],
        labels[warm],
        evaluation.grid_accuracy(model, images[warm], labels[warm], keep_lowest=3, batch_size=batch_size),
        batch_size=batch_size,
    )
    foolbox_grid(foolbox, model, images[warm], labels[warm], batch_size)

    clock = timing.Clock()
    grid = evaluation.grid_accuracy(model, images, labels, keep_lowest=3, batch_size=batch_size)
    grid_wall, grid_cpu = clock.elapsed()
    clock = timing.Clock()
    refined = evaluation.refine(model, images, labels, grid, batch_size=batch_size)
    refine_wall, refine_cpu = clock.elapsed()
    clock = timing.Clock()
    foolbox_robust = foolbox_grid(foolbox, model, images, labels, batch_size)
    foolbox_wall, foolbox_cpu = clock.elapsed()

    print(
        f"ours, early-exit grid: {grid_wall:.2f} s wall, {grid_cpu:.2f} s CPU, "
        f"{grid.evaluations} of {len(transforms.grid()) * len(images)} pairs; grid accuracy {grid.accuracy:.3f}"
    )
    print(
        f"ours, refined attack on the {grid.correct.sum()} grid survivors: {refine_wall:.2f} s wall, "
        f"{refine_cpu:.2f} s CPU; accuracy {refined.accuracy:.3f}"
    )
    print(
        f"foolbox SpatialAttack grid: {foolbox_wall:.2f} s wall, {foolbox_cpu:.2f} s CPU; "
        f"accuracy {foolbox_robust.mean():.3f} (differs from ours on {(foolbox_robust != grid.correct).sum()} "
        f"images: different transformations, see the docstring)"
    )
    print(f"speed-up, foolbox grid / our grid: {foolbox_wall / grid_wall:.1f}x wall, {foolbox_cpu / grid_cpu:.1f}x CPU")
    print(
        f"speed-up, foolbox grid / (our grid + refined): {foolbox_wall / (grid_wall + refine_wall):.1f}x wall, "
        f"{foolbox_cpu / (grid_cpu + refine_cpu):.1f}x CPU"
    )
    print(
        f"grid accuracy overestimates robustness in the continuous box by "
        f"{100 * (grid.accuracy - refined.accuracy):.2f} points "
        f"({(grid.correct & ~refined.correct).sum()} of {grid.correct.sum()} grid survivors broken)"
    )
    print(f"load average at end: {timing.load_average()}")


if __name__ == "__main__":
    cli.run(VsPeersOptions, main)
