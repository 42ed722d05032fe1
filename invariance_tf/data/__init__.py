"""Datasets of the paper (CIFAR-10, CIFAR-100, SVHN) as uint8 arrays and tf.data pipelines.

Two sources:

- A local TFDS ImageFolder tree `<data_dir>/{train,test}/<class>/<image>` (`image_folder`).
  Labels are the class folder names sorted alphabetically (the TFDS
  ImageFolder convention), and the folder names must be the dataset's
  canonical class names, so that alphabetical order is the canonical label
  order: CIFAR-10 `airplane` ... `truck`, CIFAR-100 the 100 fine label names
  (`apple`, `aquarium_fish`, ..., `worm`), SVHN the digits `0` ... `9`.
  Only the splits a task reads must exist: training needs both, evaluation
  only `test/`. Decoded splits are cached on disk (see `default_cache_dir`),
  keyed by the folder's file names, sizes and modification times.
- A TFDS copy when `data_dir` is None (`tfds_source`): a prepared one is read
  (`tfds.load(..., download=False)`); without one, TFDS downloads and
  prepares it where the dataset's server is reachable, and offline a one-line
  error says how to point at local data instead.

Images are uint8 `[N, 32, 32, 3]` RGB; labels are int64 `[N]`. The pipelines
yield float32 raw pixel values in [0, 255]; models normalise them.
`load_names` names the images `load` returns (ImageFolder paths, TFDS ids),
so that reports can point at each one; `load_with_names` returns images,
labels and names from one listing of an ImageFolder.

The package's modules, one job each: `registry` (the datasets by name), `loading` (a split from either source),
`image_folder` and `tfds_source` (the two sources), `subsets` (class-balanced subsets) and `pipelines` (tf.data).
The names below are its public API: `from invariance_tf import data; data.load(...)`.
"""

from invariance_tf.data.image_folder import CACHE_ENV_VAR, IMAGE_SUFFIXES, default_cache_dir, read_image_folder
from invariance_tf.data.loading import load, load_names, load_with_names, local_dir, tfds_name, validate_source
from invariance_tf.data.pipelines import (
    AUGMENTATIONS,
    CROP_PADDING,
    eval_dataset,
    random_crop_and_flip,
    random_flip,
    train_dataset,
)
from invariance_tf.data.registry import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASETS,
    IMAGE_SHAPE,
    SPLITS,
    SVHN_CLASSES,
    DatasetInfo,
    dataset_info,
    standard_augmentation,
)
from invariance_tf.data.subsets import at_most, balanced_subset, subset_indices, train_validation_split

__all__ = [
    "AUGMENTATIONS",
    "CACHE_ENV_VAR",
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "CROP_PADDING",
    "DATASETS",
    "IMAGE_SHAPE",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "SVHN_CLASSES",
    "DatasetInfo",
    "at_most",
    "balanced_subset",
    "dataset_info",
    "default_cache_dir",
    "eval_dataset",
    "load",
    "load_names",
    "load_with_names",
    "local_dir",
    "random_crop_and_flip",
    "random_flip",
    "read_image_folder",
    "standard_augmentation",
    "subset_indices",
    "tfds_name",
    "train_dataset",
    "train_validation_split",
    "validate_source",
]
