"""A local ImageFolder tree `<data_dir>/{train,test}/<class>/<image>`: its checks, listing, decoding and cache.

Labels are the class folder names sorted alphabetically (the TFDS ImageFolder convention). Decoded splits are cached
on disk (`default_cache_dir`), keyed by the listed files' names, sizes and modification times. Every image must
decode to 32x32 pixels; JPEGs use libjpeg's accurate integer IDCT, which matches Pillow.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from invariance_tf import files
from invariance_tf.data.registry import DECODE_BATCH, IMAGE_SHAPE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


CACHE_ENV_VAR = "INVARIANCE_TF_CACHE"


_CACHE_FORMAT = "1"


LAYOUT = "<data_dir>/{train,test}/<class>/<image>"


def default_cache_dir() -> Path:
    """Folder for decoded-split caches: `$INVARIANCE_TF_CACHE`, else `~/.cache/invariance_tf`."""
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "invariance_tf")


def relative_names(root: Path, paths: Sequence[str]) -> list[str]:
    """The paths of ImageFolder files relative to its root, with `/` separators (`test/cat/0042.png`)."""
    return [Path(path).relative_to(root).as_posix() for path in paths]


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
    paths, labels = list_images(split_dir, class_names, per_class)
    return decode_files(paths), labels, class_names


def check_classes(root: Path, class_names: Sequence[str], splits: Sequence[str]) -> None:
    """Checks `root/<split>` exists for each of `splits`, all holding exactly the class folders `class_names`."""
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {str(root)!r} is not a folder; expected {LAYOUT}")
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
        raise FileNotFoundError(f"No split folder {str(split_dir)!r}; expected {LAYOUT}")
    names = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise ValueError(f"Unexpected file {entry.path!r}; a split folder holds only class folders")
        names.append(entry.name)
    if not names:
        raise ValueError(f"Split folder {str(split_dir)!r} is empty; expected {LAYOUT}")
    return names


def list_images(
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


def load_cached(
    split_dir: Path, paths: Sequence[str], labels: np.ndarray, cache_name: str, cache_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes the files `list_images` listed in `split_dir` once and reuses the result while they are unchanged.

    The cache is `<cache_dir>/<cache_name>-<fingerprint of the files>.npz`.
    """
    cache_file = cache_dir / f"{cache_name}-{_fingerprint(split_dir, paths)}.npz"
    cached = _read_cache(cache_file)
    if cached is not None and np.array_equal(cached[1], labels):
        return cached
    images = decode_files(paths)
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


def decode_files(paths: Sequence[str]) -> np.ndarray:
    """Decodes files in parallel into uint8 `[N, 32, 32, 3]`.

    Raises ValueError naming the first file that cannot be decoded or is not
    32x32.
    """
    indexed_paths = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), list(paths)))
    decoded = indexed_paths.map(_decode_indexed, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    images = np.zeros((len(paths), *IMAGE_SHAPE), np.uint8)
    sizes = np.full((len(paths), 2), -1, np.int64)
    for index, image, size in decoded.batch(DECODE_BATCH).as_numpy_iterator():
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
