"""tf.data pipelines: endless augmented training batches that resume at any epoch, and evaluation batches.

Both yield `(float32 images in [0, 255], int64 labels)`; models normalise the pixels themselves.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from invariance_tf.data.subsets import check_arrays, check_count
from invariance_tf.options import is_count

CROP_PADDING = 4


def random_crop_and_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The paper's standard CIFAR augmentation of a batch, as float32 `[B, H, W, C]`.

    Each image is zero-padded by `CROP_PADDING` pixels on every side, cropped
    back to `H x W` at a uniformly random offset, and flipped left-right with
    probability 1/2. `seed` is a stateless seed, int `[2]`: the same seed gives
    the same crops and flips.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, minval=0, maxval=2 * CROP_PADDING + 1, dtype=tf.int32)
    flip = tf.random.stateless_uniform([batch, 1], flip_seed) < 0.5
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    columns = offsets[:, 1:] + tf.where(flip, tf.range(width - 1, -1, -1), tf.range(width))
    pad = CROP_PADDING
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Each image of a batch flipped left-right with probability 1/2, as float32 `[B, H, W, C]`.

    This is the reference code's only augmentation. `seed` is a stateless seed, int `[2]`.
    """
    images = tf.cast(images, tf.float32)
    flip = tf.random.stateless_uniform([tf.shape(images)[0], 1, 1, 1], seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


AUGMENTATIONS = {"off": None, "flip": random_flip, "crop_flip": random_crop_and_flip}


def train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    augment: str,
    seed: int = 0,
    first_epoch: int = 0,
) -> tf.data.Dataset:
    """Batches of `(float32 images in [0, 255], int64 labels)`, epoch after epoch without end.

    Each epoch is `len(images) // batch_size` batches of a new permutation
    (the rest is dropped); pass that as `steps_per_epoch` to `fit`. `augment`
    names one of `AUGMENTATIONS`: "off", "flip" (`random_flip`) or "crop_flip"
    (`random_crop_and_flip`), with new draws every epoch.
    The order and crops of epoch `e` (0-based) depend only on `seed` and `e`,
    so a run resumed at epoch `first_epoch` sees the batches an uninterrupted
    run would. The arrays stay in memory (they are the cached decode); each
    epoch gathers its batches from them.
    """
    check_arrays(images, labels)
    check_count("batch_size", batch_size, len(images))
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Unknown augment={augment!r}; valid augmentations are {list(AUGMENTATIONS)}")
    if first_epoch < 0:
        raise ValueError(f"first_epoch must be >= 0; got {first_epoch}")
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    run_key = tf.constant([seed, 0], tf.int64)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order_key, crop_key = tf.unstack(
            tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(run_key, epoch), 2)
        )
        order = tf.random.experimental.stateless_shuffle(tf.range(len(images), dtype=tf.int64), order_key)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
        return batches.enumerate().map(
            lambda step, i: (_batch_images(tf.gather(images_t, i), augment, crop_key, step), tf.gather(labels_t, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


def _batch_images(images: tf.Tensor, augment: str, key: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """A training batch as float32, augmented by `AUGMENTATIONS[augment]` with the batch's own stateless seed."""
    augmentation = AUGMENTATIONS[augment]
    if augmentation is None:
        return tf.cast(images, tf.float32)
    return augmentation(images, tf.random.experimental.stateless_fold_in(key, step))


def eval_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of `(float32 images in [0, 255], int64 labels)` in input order, last batch partial."""
    check_arrays(images, labels)
    if not is_count(batch_size):
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)
