"""One split of a dataset as uint8 arrays from either source (`load`), and the name of each image (`load_names`).

`data_dir` selects the source: an ImageFolder root (`image_folder`), or None, or a `DATASETS` name, for TFDS
(`tfds_source`). `validate_source` checks cheaply that the splits a task reads can be loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from invariance_tf.data import image_folder, subsets, tfds_source
from invariance_tf.data.registry import DATASETS, SPLITS, DatasetInfo, dataset_info


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
        tfds_source.prepare_copy(dataset, tfds_data_dir)
    else:
        image_folder.check_classes(Path(data_dir), info.class_names, splits)


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
            `image_folder.default_cache_dir()`.

    Every image must decode to 32x32 pixels: an image of another size is an
    error naming the file (resize offline; silently resampling would change
    the translations the paper measures in pixels). Grayscale and RGBA
    images are converted to RGB. JPEGs use libjpeg's accurate integer IDCT,
    which matches Pillow.
    """
    images, labels, _, info = _read_split(dataset, data_dir, split, tfds_data_dir, cache_dir)
    keep = subsets.subset(labels, examples, seed)
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
        names, _ = tfds_source.names(dataset, split, tfds_data_dir)
    keep = subsets.subset(labels, examples, seed)
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
        names, labels = tfds_source.names(dataset, split, tfds_data_dir)
    else:
        paths, labels = image_folder.list_images(data_dir / split, info.class_names)
        names = image_folder.relative_names(data_dir, paths)
    return np.asarray(names, dtype=object)[subsets.subset(labels, examples, seed)].tolist()


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
        images, labels = tfds_source.read_split(dataset, split, tfds_data_dir)
        return images, labels, None, info
    paths, labels = image_folder.list_images(data_dir / split, info.class_names)
    cache = Path(cache_dir) if cache_dir is not None else image_folder.default_cache_dir()
    images, labels = image_folder.load_cached(data_dir / split, paths, labels, f"{info.name}-{split}", cache)
    return images, labels, image_folder.relative_names(data_dir, paths), info
