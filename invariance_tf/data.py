"""Datasets of the paper (CIFAR-10, CIFAR-100, SVHN) as uint8 arrays and tf.data pipelines.

Two sources:

- A local TFDS ImageFolder tree `<data_dir>/{train,test}/<class>/<image>`.
  Labels are the class folder names sorted alphabetically (the TFDS
  ImageFolder convention), and the folder names must be the dataset's
  canonical class names, so that alphabetical order is the canonical label
  order: CIFAR-10 `airplane` ... `truck`, CIFAR-100 the 100 fine label names
  (`apple`, `aquarium_fish`, ..., `worm`), SVHN the digits `0` ... `9`.
  Only the splits a task reads must exist: training needs both, evaluation
  only `test/`. Decoded splits are cached on disk (see `default_cache_dir`),
  keyed by the folder's file names, sizes and modification times.
- A TFDS copy when `data_dir` is None: a prepared one is read
  (`tfds.load(..., download=False)`); without one, TFDS downloads and
  prepares it where the dataset's server is reachable, and offline a one-line
  error says how to point at local data instead.

Images are uint8 `[N, 32, 32, 3]` RGB; labels are int64 `[N]`. The pipelines
yield float32 raw pixel values in [0, 255]; models normalise them.
`load_names` names the images `load` returns (ImageFolder paths, TFDS ids),
so that reports can point at each one; `load_with_names` returns images,
labels and names from one listing of an ImageFolder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import socket
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from invariance_tf import files

SPLITS = ("train", "test")
IMAGE_SHAPE = (32, 32, 3)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CROP_PADDING = 4
CACHE_ENV_VAR = "INVARIANCE_TF_CACHE"
_CACHE_FORMAT = "1"
_DECODE_BATCH = 4096
_LAYOUT = "<data_dir>/{train,test}/<class>/<image>"

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
SVHN_CLASSES = tuple(str(digit) for digit in range(10))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: TFDS name (`cifar10`, `cifar100`, `svhn_cropped`).
        class_names: label id -> class name, in canonical label order.
        image_shape: `(height, width, channels)` of every image.
        standard_augmentation: whether the paper's "std" training uses random
            crops and flips on this dataset (CIFAR yes, SVHN no).
        download_host: the server TFDS downloads the dataset from, probed
            before a download so that an offline machine fails in seconds.
    """

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    standard_augmentation: bool
    download_host: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS = {
    "cifar10": DatasetInfo("cifar10", CIFAR10_CLASSES, IMAGE_SHAPE, True, "www.cs.toronto.edu"),
    "cifar100": DatasetInfo("cifar100", CIFAR100_CLASSES, IMAGE_SHAPE, True, "www.cs.toronto.edu"),
    "svhn_cropped": DatasetInfo("svhn_cropped", SVHN_CLASSES, IMAGE_SHAPE, False, "ufldl.stanford.edu"),
}


def dataset_info(dataset: str) -> DatasetInfo:
    """Returns the `DatasetInfo` of `dataset`, raising ValueError for unknown names."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def standard_augmentation(dataset: str) -> bool:
    """Whether the paper trains `dataset` with random crops and flips (CIFAR) or without (SVHN)."""
    return dataset_info(dataset).standard_augmentation


def default_cache_dir() -> Path:
    """Folder for decoded-split caches: `$INVARIANCE_TF_CACHE`, else `~/.cache/invariance_tf`."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "invariance_tf")


def validate_source(
    dataset: str,
    data_dir: str | Path | None = None,
    tfds_data_dir: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
) -> None:
    """Checks cheaply that `splits` of `dataset` can be loaded, before any expensive work.

    With `data_dir`, checks the ImageFolder layout: each of `splits` exists,
    they hold the same class folders, and those are the dataset's canonical
    class names. Training needs both splits (the default); evaluating needs
    only `("test",)`. Without `data_dir`, checks that a prepared TFDS copy
    exists under `tfds_data_dir` (None: TFDS' default, `$TFDS_DATA_DIR` or
    `~/tensorflow_datasets`); if none does, TFDS downloads and prepares one
    there (the only expensive case, and only when the dataset's server answers).

    Raises:
        ValueError: unknown dataset or split, or class folders that do not match.
        FileNotFoundError: missing folders, or no TFDS copy and no network to
            download one; the message says how to point at local data.
    """
    info = dataset_info(dataset)
    data_dir = local_dir(dataset, data_dir)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits must be a non-empty selection of {list(SPLITS)}; got {list(splits)}")
    if data_dir is None:
        _prepare_tfds_copy(dataset, tfds_data_dir)
    else:
        _check_image_folder_classes(Path(data_dir), info.class_names, splits)


def load(
    dataset: str,
    data_dir: str | Path | None = None,
    split: str = "train",
    examples: int | None = None,
    seed: int = 0,
    tfds_data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """Loads one split as uint8 images `[N, 32, 32, 3]`, int64 labels `[N]` and its `DatasetInfo`.

    Args:
        dataset: one of `DATASETS`.
        data_dir: ImageFolder root `<data_dir>/{train,test}/<class>/<image>`
            (only `split` needs to exist); None reads a prepared TFDS copy
            from `tfds_data_dir`.
        split: `"train"` or `"test"`.
        examples: None for the whole split, else the size of a class-balanced
            subset drawn with `seed` (see `balanced_subset`).
        seed: seed of the subset; the same seed gives the same examples.
        tfds_data_dir: TFDS data folder; None uses TFDS' default.
        cache_dir: where decoded ImageFolder splits are cached; None uses
            `default_cache_dir()`.

    Every image must decode to 32x32 pixels: an image of another size is an
    error naming the file (resize offline; silently resampling would change
    the translations the paper measures in pixels). Grayscale and RGBA
    images are converted to RGB. JPEGs use libjpeg's accurate integer IDCT,
    which matches Pillow.
    """
    images, labels, _, info = _read_split(dataset, data_dir, split, tfds_data_dir, cache_dir)
    keep = _subset(labels, examples, seed)
    return images[keep], labels[keep], info


def load_with_names(
    dataset: str,
    data_dir: str | Path | None = None,
    split: str = "train",
    examples: int | None = None,
    seed: int = 0,
    tfds_data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], DatasetInfo]:
    """`load`'s images, labels and info with the name of each image (`load_names`): `(images, labels, names, info)`.

    An ImageFolder is listed once for both: each name is that of the very file decoded (or cached) at its place.
    """
    images, labels, names, info = _read_split(dataset, data_dir, split, tfds_data_dir, cache_dir)
    if names is None:
        names, _ = _tfds_names(dataset, split, tfds_data_dir)
    keep = _subset(labels, examples, seed)
    return images[keep], labels[keep], np.asarray(names, dtype=object)[keep].tolist(), info


def load_names(
    dataset: str,
    data_dir: str | Path | None = None,
    split: str = "train",
    examples: int | None = None,
    seed: int = 0,
    tfds_data_dir: str | Path | None = None,
) -> list[str]:
    """The name of each image `load` returns with the same arguments, in its order, without decoding any.

    An ImageFolder image is named by its path relative to `data_dir`, with
    `/` separators (`test/cat/0042.png`); a TFDS example by its `id` feature
    where the dataset has one (`test_00042`), else by `<split>[<index>]`,
    its position in the whole split. Names let a report point at the very
    file or example behind each row. The files are listed as `load` lists
    them, and its cache is keyed by every listed file's path, size and
    modification time, so the names hold whether `load` decodes or reads
    its cache.
    """
    data_dir = local_dir(dataset, data_dir)
    info = _checked_source(dataset, data_dir, split, tfds_data_dir)
    if data_dir is None:
        names, labels = _tfds_names(dataset, split, tfds_data_dir)
    else:
        paths, labels = _list_images(data_dir / split, info.class_names)
        names = _relative_names(data_dir, paths)
    return np.asarray(names, dtype=object)[_subset(labels, examples, seed)].tolist()


def tfds_name(data_dir: str | Path | None) -> str | None:
    """The TFDS dataset `data_dir` names instead of a folder, or None.

    A `data_dir` that is a name of `DATASETS` (e.g. `--data_dir=cifar10`) and not an existing folder means that
    dataset from TFDS.
    """
    if data_dir and str(data_dir) in DATASETS and not Path(data_dir).is_dir():
        return str(data_dir)
    return None


def local_dir(dataset: str, data_dir: str | Path | None) -> Path | None:
    """`data_dir` as an ImageFolder root, or None for TFDS: when it is empty or names `dataset` (`tfds_name`).

    Raises ValueError when it names another TFDS dataset.
    """
    named = tfds_name(data_dir)
    if named is not None and named != dataset:
        raise ValueError(
            f"--data_dir={data_dir} names the TFDS dataset {named}, not --dataset={dataset}: pass --dataset={named}"
        )
    return Path(data_dir) if data_dir and named is None else None


def _checked_source(
    dataset: str, data_dir: str | Path | None, split: str, tfds_data_dir: str | Path | None
) -> DatasetInfo:
    """The `DatasetInfo` of `dataset`, once `split` is known and loadable from its source (`validate_source`)."""
    info = dataset_info(dataset)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {list(SPLITS)}")
    validate_source(dataset, data_dir, tfds_data_dir, splits=(split,))
    return info


def _read_split(
    dataset: str,
    data_dir: str | Path | None,
    split: str,
    tfds_data_dir: str | Path | None,
    cache_dir: str | Path | None,
) -> tuple[np.ndarray, np.ndarray, list[str] | None, DatasetInfo]:
    """A whole split as `load` reads it: images, labels, each ImageFolder image's name (None from TFDS) and info."""
    data_dir = local_dir(dataset, data_dir)
    info = _checked_source(dataset, data_dir, split, tfds_data_dir)
    if data_dir is None:
        images, labels = _load_tfds(dataset, split, tfds_data_dir)
        return images, labels, None, info
    paths, labels = _list_images(data_dir / split, info.class_names)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    images, labels = _load_image_folder_cached(data_dir / split, paths, labels, f"{info.name}-{split}", cache)
    return images, labels, _relative_names(data_dir, paths), info


def _relative_names(root: Path, paths: Sequence[str]) -> list[str]:
    """The paths of ImageFolder files relative to its root, with `/` separators (`test/cat/0042.png`)."""
    return [Path(path).relative_to(root).as_posix() for path in paths]


def _subset(labels: np.ndarray, examples: int | None, seed: int) -> np.ndarray | slice:
    """Indices of the class-balanced subset `load` keeps (`balanced_subset`), or all when `examples` is None."""
    if examples is None:
        return slice(None)
    _check_count("examples", examples, len(labels))
    return balanced_subset(labels, examples, seed)


def subset_indices(labels: np.ndarray, examples: int | None, seed: int) -> np.ndarray:
    """The positions, in the whole split's loader order, of the examples `load(..., examples, seed)` returns.

    `labels` are the whole split's; the positions come sorted, so they name the same images as `load`'s output
    in its order.
    """
    return np.arange(len(labels))[_subset(np.asarray(labels), examples, seed)]


def read_image_folder(
    root: str | Path, split: str, per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes `<root>/<split>/<class>/*` into uint8 images [N, 32, 32, 3] and int64 labels [N].

    Labels are the class folder names sorted alphabetically (the TFDS
    ImageFolder convention); the names are returned too and are not checked
    against a dataset. `per_class` keeps the first files (sorted by name) of
    each class. Nothing is cached. Bad files raise as in `load`.
    """
    split_dir = Path(root) / split
    class_names = _class_folders(split_dir)
    paths, labels = _list_images(split_dir, class_names, per_class)
    return _decode_files(paths), labels, class_names


def balanced_subset(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of `count` examples, spread over classes as evenly as possible.

    Each class contributes `count // num_classes` or one more (a seeded choice
    of classes gets the remainder), or all its examples if it has fewer; the
    examples within a class are a seeded random choice. Same `labels`, `count`
    and `seed` give the same indices.
    """
    labels = np.asarray(labels)
    _check_count("count", count, len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    _, classes = np.unique(labels[order], return_inverse=True)
    by_class = np.argsort(classes, kind="stable")
    class_start = np.searchsorted(classes[by_class], classes[by_class])
    rank = np.empty(len(labels), np.int64)
    rank[by_class] = np.arange(len(labels)) - class_start
    class_priority = rng.permutation(classes.max() + 1)[classes]
    chosen = np.lexsort((class_priority, rank))[:count]
    return np.sort(order[chosen])


def at_most(labels: np.ndarray, count: int, seed: int) -> np.ndarray | slice:
    """Indices of a class-balanced subset of `count` examples: the images an evaluation of at most `count` reads.

    Every index when `count` is 0 or not smaller than their number; the subset is `balanced_subset`'s.
    """
    return balanced_subset(labels, count, seed) if 0 < count < len(labels) else slice(None)


def train_validation_split(
    images: np.ndarray, labels: np.ndarray, validation: int | float, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Splits off a class-balanced validation set: `((train_x, train_y), (val_x, val_y))`.

    `validation` is a count of examples (int) or a fraction in (0, 1) of
    `len(images)` (float, rounded). Both parts keep the input order.
    """
    _check_arrays(images, labels)
    n = len(images)
    if isinstance(validation, float):
        if not 0.0 < validation < 1.0:
            raise ValueError(f"validation fraction must be in (0, 1); got {validation}")
        validation = round(validation * n)
    _check_count("validation", validation, n - 1)
    is_validation = np.zeros(n, bool)
    is_validation[balanced_subset(labels, validation, seed)] = True
    train = images[~is_validation], labels[~is_validation]
    return train, (images[is_validation], labels[is_validation])


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
    _check_arrays(images, labels)
    _check_count("batch_size", batch_size, len(images))
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
    _check_arrays(images, labels)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
    return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)


def _check_count(name: str, value: int, maximum: int) -> None:
    """Raises ValueError unless `value` is an int in [1, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [1, {maximum}]; got {value!r}")


def _check_arrays(images: np.ndarray, labels: np.ndarray) -> None:
    """Raises ValueError unless images are `[N, H, W, C]` with N labels, N >= 1."""
    if np.ndim(images) != 4 or np.ndim(labels) != 1 or len(images) != len(labels) or not len(images):
        raise ValueError(
            "Expected images [N, H, W, C] and labels [N] with N >= 1; "
            f"got shapes {np.shape(images)} and {np.shape(labels)}"
        )


def _prepare_tfds_copy(dataset: str, tfds_data_dir: str | Path | None) -> None:
    """Makes sure TFDS has a prepared copy, downloading one when the dataset's server is reachable.

    The download is TFDS' own. When the server is not reachable, raises FileNotFoundError saying how to use
    local data.
    """
    builder = tfds.builder(dataset, data_dir=tfds_data_dir)
    if builder.is_prepared():
        return
    host = dataset_info(dataset).download_host
    searched = Path(builder.data_dir).parents[1]
    if not _reachable(host):
        raise FileNotFoundError(
            f"No TFDS copy of {dataset!r} found in {str(searched)!r}, and {host} (its download server) is out of "
            f"reach: pass --data_dir=DIR pointing at an ImageFolder tree DIR/{{train,test}}/<class>/<image> "
            f"(e.g. --data_dir=../shared/data/cifar10 for cifar10), or run once online to download it"
        )
    print(f"No TFDS copy of {dataset!r} in {str(searched)!r}: downloading it from {host}", flush=True)
    builder.download_and_prepare()


def _reachable(host: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `host`'s HTTPS port opens within `timeout` seconds."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _load_tfds(dataset: str, split: str, tfds_data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Reads a prepared TFDS split into uint8 images and int64 labels, without downloading."""
    examples = tfds.load(dataset, split=split, data_dir=tfds_data_dir, download=False, as_supervised=True)
    parts = list(tfds.as_numpy(examples.batch(_DECODE_BATCH)))
    images = np.concatenate([x for x, _ in parts]).astype(np.uint8)
    labels = np.concatenate([y for _, y in parts]).astype(np.int64)
    if images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"TFDS {dataset!r} {split} images are {images.shape[1:]}; expected {IMAGE_SHAPE}")
    return images, labels


def _tfds_names(dataset: str, split: str, tfds_data_dir: str | Path | None) -> tuple[list[str], np.ndarray]:
    """Each example's name (`load_names`) and int64 label, in the order `_load_tfds` reads them.

    The images are read but not decoded.
    """
    keys = ("id", "label") if "id" in tfds.builder(dataset, data_dir=tfds_data_dir).info.features else ("label",)
    examples = tfds.load(
        dataset,
        split=split,
        data_dir=tfds_data_dir,
        download=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    ).map(lambda example: {key: example[key] for key in keys})
    parts = list(tfds.as_numpy(examples.batch(_DECODE_BATCH)))
    labels = np.concatenate([part["label"] for part in parts]).astype(np.int64)
    if "id" not in keys:
        return [f"{split}[{index}]" for index in range(len(labels))], labels
    return [name.decode() for part in parts for name in part["id"]], labels


def _check_image_folder_classes(root: Path, class_names: Sequence[str], splits: Sequence[str]) -> None:
    """Checks `root/<split>` exists for each of `splits`, all holding exactly the class folders `class_names`."""
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} is not a folder; expected {_LAYOUT}")
    found = {split: _class_folders(root / split) for split in splits}
    for split, other in itertools.permutations(splits, 2):
        unmatched = sorted(set(found[split]) - set(found[other]))
        if unmatched:
            raise ValueError(
                f"Class folder {str(root / split / unmatched[0])!r} has no counterpart "
                f"{str(root / other / unmatched[0])!r}; both splits need the same class folders"
            )
    unexpected = sorted(set(found[splits[0]]) - set(class_names))
    missing = sorted(set(class_names) - set(found[splits[0]]))
    if unexpected or missing:
        raise ValueError(
            f"Class folders in {str(root)!r} do not match the dataset's classes: "
            f"unexpected {unexpected[:5]}, missing {missing[:5]}"
            f"{' (first 5 shown)' if max(len(unexpected), len(missing)) > 5 else ''}; "
            f"expected folder names {list(class_names)[:10]}{'...' if len(class_names) > 10 else ''}"
        )


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted class folder names of `split_dir`; hidden entries (`.*`) are ignored."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"No split folder {str(split_dir)!r}; expected {_LAYOUT}")
    names = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise ValueError(f"Unexpected file {entry.path!r}; a split folder holds only class folders")
        names.append(entry.name)
    if not names:
        raise ValueError(f"Split folder {str(split_dir)!r} is empty; expected {_LAYOUT}")
    return names


def _list_images(
    split_dir: Path, class_names: Sequence[str], per_class: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Image paths sorted by class then file name, and their int64 labels.

    Raises ValueError naming a non-image entry (by suffix, `IMAGE_SUFFIXES`;
    hidden files are ignored) or an empty class folder.
    """
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = split_dir / name
        entries = sorted((e for e in os.scandir(class_dir) if not e.name.startswith(".")), key=lambda e: e.name)
        for entry in entries:
            if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES or not entry.is_file():
                raise ValueError(f"Not an image file: {entry.path!r}; expected suffixes {list(IMAGE_SUFFIXES)}")
        if not entries:
            raise ValueError(f"Class folder {str(class_dir)!r} has no images")
        paths += [entry.path for entry in entries[:per_class]]
        labels += [label] * len(entries[:per_class])
    return paths, np.asarray(labels, np.int64)


def _load_image_folder_cached(
    split_dir: Path, paths: Sequence[str], labels: np.ndarray, cache_name: str, cache_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes the files `_list_images` listed in `split_dir` once and reuses the result while they are unchanged.

    The cache is `<cache_dir>/<cache_name>-<fingerprint of the files>.npz`.
    """
    cache_file = cache_dir / f"{cache_name}-{_fingerprint(split_dir, paths)}.npz"
    cached = _read_cache(cache_file)
    if cached is not None and np.array_equal(cached[1], labels):
        return cached
    images = _decode_files(paths)
    _write_cache(cache_file, images, labels)
    return images, labels


def _fingerprint(split_dir: Path, paths: Sequence[str]) -> str:
    """Hash of the relative path, size and mtime of every file (16 hex digits)."""
    digest = hashlib.sha256(f"format={_CACHE_FORMAT};shape={IMAGE_SHAPE}".encode())
    for path in paths:
        stat = os.stat(path)
        entry = f"\n{os.path.relpath(path, split_dir)}\t{stat.st_size}\t{stat.st_mtime_ns}"
        digest.update(entry.encode())
    return digest.hexdigest()[:16]


def _read_cache(cache_file: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached `(images, labels)`, or None if the file is missing or unreadable."""
    try:
        with np.load(cache_file) as arrays:
            return arrays["images"], arrays["labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _write_cache(cache_file: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes the cache atomically; a failure only warns, since the cache is an optimisation."""
    try:
        with files.atomic_path(cache_file) as partial, open(partial, "wb") as f:
            np.savez(f, images=images, labels=labels)
    except OSError as error:
        warnings.warn(f"Could not write the decoded-data cache {str(cache_file)!r}: {error}", stacklevel=2)


def _decode(contents: tf.Tensor) -> tf.Tensor:
    """Decodes an encoded image to uint8 RGB `[H, W, 3]`; JPEGs with the accurate IDCT."""
    return tf.cond(
        tf.io.is_jpeg(contents),
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )


def _decode_indexed(index: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """`(index, image fitted to IMAGE_SHAPE, decoded [height, width])` for one file."""
    image = _decode(tf.io.read_file(path))
    fitted = tf.image.resize_with_crop_or_pad(image, IMAGE_SHAPE[0], IMAGE_SHAPE[1])
    return index, fitted, tf.shape(image)[:2]


def _decode_files(paths: Sequence[str]) -> np.ndarray:
    """Decodes files in parallel into uint8 `[N, 32, 32, 3]`.

    Raises ValueError naming the first file that cannot be decoded or is not
    32x32.
    """
    indexed_paths = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), list(paths)))
    decoded = indexed_paths.map(_decode_indexed, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    images = np.zeros((len(paths), *IMAGE_SHAPE), np.uint8)
    sizes = np.full((len(paths), 2), -1, np.int64)
    for index, image, size in decoded.batch(_DECODE_BATCH).as_numpy_iterator():
        images[index], sizes[index] = image, size
    failed = np.flatnonzero(sizes[:, 0] < 0)
    if failed.size:
        bad = paths[failed[0]]
        raise ValueError(f"Cannot decode image file {bad!r}: {_decode_error(bad)}")
    wrong = np.flatnonzero((sizes != IMAGE_SHAPE[:2]).any(axis=1))
    if wrong.size:
        height, width = sizes[wrong[0]]
        raise ValueError(
            f"Image {paths[wrong[0]]!r} is {height}x{width} pixels; expected "
            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} (resize it offline)"
        )
    return images


def _decode_error(path: str) -> str:
    """TensorFlow's message for reading or decoding `path` (called only after a failure)."""
    try:
        _decode(tf.io.read_file(path))
    except tf.errors.OpError as error:
        return error.message.splitlines()[0].split("}} ")[-1]
    return "decoding failed inside tf.data but not when retried"
