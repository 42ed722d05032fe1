"""Tests for invariance_tf.data: real CIFAR-10 slices plus synthetic ImageFolder trees built here."""

from __future__ import annotations

import os
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import run_cli
from PIL import Image

from invariance_tf import data, experiment_config, run_data
from invariance_tf.data import image_folder, loading, tfds_source

CIFAR10_ORDER = [
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
]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Points the decoded-data cache at a session tmp folder, so tests never touch ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get(data.CACHE_ENV_VAR)
    os.environ[data.CACHE_ENV_VAR] = str(cache)
    yield cache
    if previous is None:
        del os.environ[data.CACHE_ENV_VAR]
    else:
        os.environ[data.CACHE_ENV_VAR] = previous


@pytest.fixture(scope="session")
def cifar10_test(cifar10_dir) -> tuple[np.ndarray, np.ndarray]:
    """The full real CIFAR-10 test split through `data.load` (decoded once per session)."""
    images, labels, _ = data.load("cifar10", cifar10_dir, "test")
    return images, labels


def write_image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_tree(root: Path, classes, per_class: int = 1, splits=data.SPLITS) -> Path:
    """ImageFolder tree of 32x32 PNGs; pixel (0, 0) is (label, index in class, split index)."""
    for split_index, split in enumerate(splits):
        for label, name in enumerate(classes):
            for k in range(per_class):
                pixels = np.full((32, 32, 3), (label, k, split_index), np.uint8)
                write_image(root / split / name / f"{k:04d}.png", pixels)
    return root


def padded_crops(image: np.ndarray) -> np.ndarray:
    """All 2 * 9 * 9 crops of `image` zero-padded by 4 pixels, each also flipped left-right."""
    pad = data.CROP_PADDING
    padded = np.pad(image.astype(np.float32), [(pad, pad), (pad, pad), (0, 0)])
    h, w = image.shape[:2]
    crops = np.stack([padded[y : y + h, x : x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)])
    return np.concatenate([crops, crops[:, :, ::-1]])


def crop_index(output: np.ndarray, image: np.ndarray) -> int:
    """Index into `padded_crops(image)` of the crop equal to `output`, or -1."""
    matches = np.flatnonzero((padded_crops(image) == output).all(axis=(1, 2, 3)))
    return int(matches[0]) if matches.size else -1


# Real CIFAR-10.


def test_cifar10_label_order(cifar10_dir):
    data.validate_source("cifar10", cifar10_dir)
    assert list(data.dataset_info("cifar10").class_names) == CIFAR10_ORDER
    _, _, folder_names = data.read_image_folder(cifar10_dir, "test", per_class=1)
    assert folder_names == CIFAR10_ORDER
    _, labels, info = data.load("cifar10", cifar10_dir, "test", examples=20)
    assert list(info.class_names) == CIFAR10_ORDER and info.num_classes == 10
    assert info.image_shape == (32, 32, 3)


def test_decode_matches_pillow(cifar10_dir, cifar10_test_slice):
    images, labels = cifar10_test_slice
    files = [path for name in CIFAR10_ORDER for path in sorted((cifar10_dir / "test" / name).iterdir())[:10]]
    pillow = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 10))
    np.testing.assert_allclose(images.reshape(-1, 3).mean(0), pillow.reshape(-1, 3).mean(0), atol=0.05)
    assert np.abs(images.astype(int) - pillow).max() <= 1


def test_load_agrees_with_read_image_folder(cifar10_test, cifar10_test_slice):
    images, labels = cifar10_test
    assert images.shape == (10_000, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
    first_ten = np.concatenate([images[labels == c][:10] for c in range(10)])
    np.testing.assert_array_equal(first_ten, cifar10_test_slice[0])


def test_examples_are_reproducible_balanced_subsets(cifar10_dir, cifar10_test):
    images, labels = cifar10_test
    a_images, a_labels, _ = data.load("cifar10", cifar10_dir, "test", examples=100, seed=1)
    b_images, b_labels, _ = data.load("cifar10", cifar10_dir, "test", examples=100, seed=1)
    c_images, _, _ = data.load("cifar10", cifar10_dir, "test", examples=100, seed=2)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert a_images.shape == (100, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(a_labels), [10] * 10)
    assert not np.array_equal(a_images, c_images)
    keep = data.balanced_subset(labels, 100, seed=1)
    np.testing.assert_array_equal(a_images, images[keep])
    _, odd_labels, _ = data.load("cifar10", cifar10_dir, "test", examples=105, seed=1)
    assert len(odd_labels) == 105 and set(np.bincount(odd_labels)) == {10, 11}


def test_names_are_the_files_of_a_balanced_subset_read_from_the_cache(cifar10_dir, cifar10_test, monkeypatch):
    """Each name, decoded by Pillow, is the image `load` returns at its position; the split comes from the cache."""
    monkeypatch.setattr(image_folder, "decode_files", lambda paths: pytest.fail("the decoded split was not cached"))
    images, labels, info = data.load("cifar10", cifar10_dir, "test", examples=40, seed=3)
    names = data.load_names("cifar10", cifar10_dir, "test", examples=40, seed=3)
    assert len(set(names)) == 40 and names != data.load_names("cifar10", cifar10_dir, "test", examples=40, seed=4)
    assert [name.split("/")[:2] for name in names] == [["test", info.class_names[label]] for label in labels]
    pillow = np.stack([np.asarray(Image.open(cifar10_dir / name).convert("RGB")) for name in names])
    assert np.abs(images.astype(int) - pillow).max() <= 1
    whole = data.load_names("cifar10", cifar10_dir, "test")
    assert len(whole) == 10_000 and whole[0] == "test/airplane/0000.jpg" and whole[-1] == "test/truck/0999.jpg"


def test_names_follow_files_swapped_after_caching(tmp_path):
    """Two files of a class swap names after the split was cached: the names still point at the right pixels."""
    root = write_tree(tmp_path / "cifar10", CIFAR10_ORDER, per_class=2, splits=("test",))
    first, second = root / "test" / "bird" / "0000.png", root / "test" / "bird" / "0001.png"
    os.utime(first, ns=(0, 10**18))
    os.utime(second, ns=(0, 2 * 10**18))
    data.load("cifar10", root, "test")
    first.rename(tmp_path / "swap.png")
    second.rename(first)
    (tmp_path / "swap.png").rename(second)
    images, _, _ = data.load("cifar10", root, "test", examples=20, seed=1)
    names = data.load_names("cifar10", root, "test", examples=20, seed=1)
    pillow = np.stack([np.asarray(Image.open(root / name)) for name in names])
    np.testing.assert_array_equal(images, pillow)
    assert images[names.index("test/bird/0000.png"), 0, 0, 1] == 1


def test_images_and_their_names_come_from_one_listing_of_the_folder(tmp_path, monkeypatch):
    """`load_with_names` is `load` beside `load_names`, listing the ImageFolder once."""
    root = write_tree(tmp_path / "cifar10", CIFAR10_ORDER, per_class=3, splits=("test",))
    images, labels, info = data.load("cifar10", root, "test", examples=20, seed=1)
    names = data.load_names("cifar10", root, "test", examples=20, seed=1)
    listings, list_images = [], image_folder.list_images

    def listed(*args):
        listings.append(args)
        return list_images(*args)

    monkeypatch.setattr(image_folder, "list_images", listed)
    loaded = data.load_with_names("cifar10", root, "test", examples=20, seed=1)
    assert len(listings) == 1
    np.testing.assert_array_equal(loaded[0], images)
    np.testing.assert_array_equal(loaded[1], labels)
    assert loaded[2:] == (names, info)


@pytest.mark.parametrize("examples", [0, -5, 10_001, True, 2.5])
def test_examples_out_of_range(cifar10_dir, examples):
    with pytest.raises(ValueError, match=r"examples must be an integer in \[1, 10000\]; got"):
        data.load("cifar10", cifar10_dir, "test", examples=examples)


def test_balanced_subset_with_a_small_class():
    labels = np.array([0] * 2 + [1] * 50 + [2] * 50)
    keep = data.balanced_subset(labels, 30, seed=0)
    assert np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(np.bincount(labels[keep]), [2, 14, 14])


@pytest.mark.slow
def test_full_train_split_matches_readme(cifar10_dir):
    images, labels, _ = data.load("cifar10", cifar10_dir, "train")
    np.testing.assert_array_equal(np.bincount(labels), [5000] * 10)
    np.testing.assert_allclose(images.reshape(-1, 3).mean(0), [125.27, 122.93, 113.86], atol=0.01)


# Augmentation and pipelines.


def test_random_crop_and_flip_returns_padded_crops(cifar10_test_slice):
    images = cifar10_test_slice[0][::3]
    out = data.random_crop_and_flip(images, tf.constant([1, 2])).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    found = [crop_index(o, x) for o, x in zip(out, images)]
    assert -1 not in found
    assert len(set(found)) > 5
    assert min(found) < 81 <= max(found)
    np.testing.assert_array_equal(out, data.random_crop_and_flip(images, tf.constant([1, 2])).numpy())
    assert not np.array_equal(out, data.random_crop_and_flip(images, tf.constant([1, 3])).numpy())


def test_random_crop_and_flip_covers_every_offset():
    image = np.arange(1, 32 * 32 + 1, dtype=np.float32).reshape(32, 32, 1)
    out = data.random_crop_and_flip(np.repeat(image[None], 600, axis=0), tf.constant([0, 7])).numpy()
    candidates = padded_crops(image)
    matches = (out[:, None] == candidates[None]).all(axis=(2, 3, 4))
    assert (matches.sum(axis=1) == 1).all()
    index = matches.argmax(axis=1)
    flipped, offset = index // 81, index % 81
    assert set(offset // 9) == set(range(9)) and set(offset % 9) == set(range(9))
    assert 0.4 < flipped.mean() < 0.6


def test_train_dataset_augments_each_image_of_the_epoch(cifar10_test_slice):
    images = cifar10_test_slice[0][:64]
    ids = np.arange(64, dtype=np.int64)
    batches = list(data.train_dataset(images, ids, 16, augment="crop_flip", seed=0).take(4).as_numpy_iterator())
    assert [x.shape for x, _ in batches] == [(16, 32, 32, 3)] * 4
    epoch_ids = np.concatenate([y for _, y in batches])
    assert sorted(epoch_ids) == list(ids) and not np.array_equal(epoch_ids, ids)
    outputs = np.concatenate([x for x, _ in batches])
    assert all(crop_index(o, images[i]) >= 0 for o, i in zip(outputs, epoch_ids))
    assert sum(np.array_equal(o, images[i]) for o, i in zip(outputs, epoch_ids)) < 16


def epochs_of(dataset: tf.data.Dataset, steps: int, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The first `count` epochs of an endless training dataset of `steps` batches per epoch."""
    batches = list(dataset.take(steps * count).as_numpy_iterator())
    return [batches[i : i + steps] for i in range(0, len(batches), steps)]


def test_train_dataset_reshuffles_each_epoch_reproducibly():
    images = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    ids = np.arange(100, dtype=np.int64)
    first, second = epochs_of(data.train_dataset(images, ids, 32, augment="off", seed=5), 3, 2)
    again = epochs_of(data.train_dataset(images, ids, 32, augment="off", seed=5), 3, 2)
    assert [len(y) for _, y in first] == [32, 32, 32]
    for epoch in (first, second):
        epoch_ids = np.concatenate([y for _, y in epoch])
        assert len(set(epoch_ids)) == 96
    assert not np.array_equal(*(np.concatenate([y for _, y in epoch]) for epoch in (first, second)))
    for (x, y), (_, y_again) in zip(first + second, again[0] + again[1]):
        np.testing.assert_array_equal(y, y_again)
        np.testing.assert_array_equal(x, images[y].astype(np.float32))
        assert x.dtype == np.float32


@pytest.mark.parametrize("augment", ["off", "flip", "crop_flip"])
def test_a_resumed_run_sees_the_batches_of_an_uninterrupted_one(augment):
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    ids = np.arange(64, dtype=np.int64)
    uninterrupted = epochs_of(data.train_dataset(images, ids, 16, augment=augment, seed=7), 4, 5)
    resumed = epochs_of(data.train_dataset(images, ids, 16, augment=augment, seed=7, first_epoch=3), 4, 2)
    for (x, y), (x_resumed, y_resumed) in zip(uninterrupted[3] + uninterrupted[4], resumed[0] + resumed[1]):
        np.testing.assert_array_equal(y, y_resumed)
        np.testing.assert_array_equal(x, x_resumed)
    other_seed = epochs_of(data.train_dataset(images, ids, 16, augment=augment, seed=8, first_epoch=3), 4, 1)
    assert not np.array_equal(resumed[0][0][1], other_seed[0][0][1])


def test_random_flip_flips_about_half_of_the_images_and_nothing_else(cifar10_test_slice):
    images = cifar10_test_slice[0].astype(np.float32)
    out = data.random_flip(images, tf.constant([4, 2])).numpy()
    flipped = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(out, images)])
    assert np.all(flipped | kept)
    assert 30 <= flipped.sum() <= 70
    np.testing.assert_array_equal(out, data.random_flip(images, tf.constant([4, 2])).numpy())


def test_an_unknown_augmentation_is_refused_with_the_valid_ones():
    images = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"augment='crop'; valid augmentations are \['off', 'flip', 'crop_flip'\]"):
        data.train_dataset(images, np.zeros(8, np.int64), 8, augment="crop")


def test_train_dataset_new_crops_each_epoch():
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    dataset = data.train_dataset(images, np.zeros(8, np.int64), 8, augment="crop_flip", seed=3)
    first, second = (x for x, _ in dataset.take(2).as_numpy_iterator())
    assert not np.array_equal(np.sort(first, axis=0), np.sort(second, axis=0))


def test_eval_dataset_keeps_order_and_last_batch():
    images = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(100, dtype=np.int64)
    batches = list(data.eval_dataset(images, labels, 32).as_numpy_iterator())
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size(batch_size):
    images, labels = np.zeros((100, 32, 32, 3), np.uint8), np.zeros(100, np.int64)
    with pytest.raises(ValueError, match="batch_size"):
        data.eval_dataset(images, labels, batch_size)


def test_eval_batch_larger_than_the_data_is_one_partial_batch():
    images, labels = np.zeros((10, 32, 32, 3), np.uint8), np.arange(10)
    batches = list(data.eval_dataset(images, labels, 128))
    assert len(batches) == 1 and batches[0][0].shape == (10, 32, 32, 3)


def test_standard_augmentation():
    assert data.standard_augmentation("cifar10") and data.standard_augmentation("cifar100")
    assert not data.standard_augmentation("svhn_cropped")


def test_train_validation_split():
    labels = np.repeat(np.arange(10), 20).astype(np.int64)
    images = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1)
    (train_x, train_y), (val_x, val_y) = data.train_validation_split(images, labels, 0.1, seed=4)
    assert len(val_y) == 20 and len(train_y) == 180
    np.testing.assert_array_equal(np.bincount(val_y), [2] * 10)
    ids = np.concatenate([train_x.ravel(), val_x.ravel()])
    assert sorted(ids) == list(range(200))
    np.testing.assert_array_equal(labels[train_x.ravel()], train_y)
    (_, _), (again, _) = data.train_validation_split(images, labels, 20, seed=4)
    np.testing.assert_array_equal(again, val_x)
    for bad in (0, 200, 0.0, 1.0):
        with pytest.raises(ValueError, match="validation"):
            data.train_validation_split(images, labels, bad)


# Synthetic ImageFolder trees.


def test_svhn_style_folders(tmp_path):
    root = write_tree(tmp_path / "svhn", [str(d) for d in range(10)], per_class=2)
    images, labels, info = data.load("svhn_cropped", root, "test")
    assert list(info.class_names) == [str(d) for d in range(10)]
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
    np.testing.assert_array_equal(images[:, 0, 0], np.stack([labels, [0, 1] * 10, [1] * 20], axis=1))


def test_cifar100_style_folders(tmp_path):
    root = write_tree(tmp_path / "cifar100", sorted(data.CIFAR100_CLASSES))
    images, labels, info = data.load("cifar100", root, "train")
    assert info.num_classes == 100 and len(set(info.class_names)) == 100
    assert info.class_names[:2] == ("apple", "aquarium_fish") and info.class_names[-1] == "worm"
    assert list(info.class_names) == sorted(info.class_names)
    np.testing.assert_array_equal(labels, np.arange(100))
    np.testing.assert_array_equal(images[:, 5, 5, 0], np.arange(100))


def test_grayscale_rgba_and_jpeg_images(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_image(tmp_path / "train" / "a" / "gray.png", gray)
    write_image(tmp_path / "train" / "a" / "rgba.png", rgba)
    write_image(tmp_path / "train" / "a" / "rgb.jpg", rgb)
    images, labels, names = data.read_image_folder(tmp_path, "train")
    assert names == ["a"] and images.shape == (3, 32, 32, 3)  # files sorted: gray, rgb, rgba
    np.testing.assert_array_equal(images[0], np.repeat(gray[..., None], 3, axis=2))
    pillow = np.asarray(Image.open(tmp_path / "train" / "a" / "rgb.jpg").convert("RGB"))
    assert np.abs(images[1].astype(int) - pillow).max() <= 1
    np.testing.assert_array_equal(images[2], rgba[..., :3])


@pytest.fixture
def cifar10_tree(tmp_path) -> Path:
    """A minimal valid cifar10 ImageFolder tree: one PNG per class and split."""
    return write_tree(tmp_path / "cifar10", CIFAR10_ORDER)


def test_corrupt_image_is_named(cifar10_tree):
    bad = cifar10_tree / "train" / "cat" / "0001.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ValueError, match=r"Cannot decode image file .*cat/0001\.jpg"):
        data.load("cifar10", cifar10_tree, "train")


def test_truncated_image_is_named(cifar10_tree):
    good = (cifar10_tree / "train" / "dog" / "0000.png").read_bytes()
    (cifar10_tree / "train" / "dog" / "0000.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"Cannot decode image file .*dog/0000\.png"):
        data.load("cifar10", cifar10_tree, "train")


def test_non_image_file_is_named(cifar10_tree):
    (cifar10_tree / "test" / "frog" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"Not an image file: .*frog/notes\.txt"):
        data.load("cifar10", cifar10_tree, "test")


def test_hidden_files_are_ignored(cifar10_tree):
    (cifar10_tree / "test" / "frog" / ".DS_Store").write_text("x")
    (cifar10_tree / "test" / ".hidden").mkdir()
    _, labels, _ = data.load("cifar10", cifar10_tree, "test")
    np.testing.assert_array_equal(labels, np.arange(10))


def test_wrong_size_image_is_named(cifar10_tree):
    write_image(cifar10_tree / "train" / "ship" / "0001.png", np.zeros((28, 30, 3), np.uint8))
    with pytest.raises(ValueError, match=r"ship/0001\.png' is 28x30 pixels; expected 32x32"):
        data.load("cifar10", cifar10_tree, "train")


@pytest.mark.parametrize("split, other", [("test", "train"), ("train", "test")])
def test_class_folder_missing_from_one_split(cifar10_tree, split, other):
    for file in (cifar10_tree / split / "horse").iterdir():
        file.unlink()
    (cifar10_tree / split / "horse").rmdir()
    with pytest.raises(ValueError, match=rf"{other}/horse' has no counterpart .*{split}/horse"):
        data.validate_source("cifar10", cifar10_tree)


def test_wrong_class_folder_names(tmp_path):
    root = write_tree(tmp_path / "c10", ["plane"] + CIFAR10_ORDER[1:])
    with pytest.raises(ValueError, match=r"unexpected \['plane'\], missing \['airplane'\]"):
        data.load("cifar10", root, "train")


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_dir '.*nowhere' is not a folder"):
        data.validate_source("cifar10", tmp_path / "nowhere")


def test_data_dir_without_test_split(tmp_path):
    root = write_tree(tmp_path / "c10", CIFAR10_ORDER, splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"No split folder '.*c10/test'"):
        data.validate_source("cifar10", root)
    with pytest.raises(FileNotFoundError, match=r"No split folder '.*c10/test'"):
        data.load("cifar10", root, "test")


def test_evaluation_needs_only_the_test_split_but_training_needs_both(tmp_path):
    root = write_tree(tmp_path / "c10", CIFAR10_ORDER, splits=("test",))
    data.validate_source("cifar10", root, splits=("test",))
    _, labels, _ = data.load("cifar10", root, "test")
    np.testing.assert_array_equal(labels, np.arange(10))
    with pytest.raises(FileNotFoundError, match=r"^No split folder '.*c10/train'; expected <data_dir>/\{train,test\}"):
        experiment_config.ExperimentConfig(dataset="cifar10", data_dir=str(root)).validate()
    with pytest.raises(ValueError, match=r"splits must be a non-empty selection of \['train', 'test'\]; got \['val'\]"):
        data.validate_source("cifar10", root, splits=("val",))


def test_empty_split_folder(cifar10_tree, tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(ValueError, match=r"Split folder '.*empty/train' is empty"):
        data.validate_source("cifar10", tmp_path / "empty")


def test_empty_class_folder(cifar10_tree):
    (cifar10_tree / "test" / "bird" / "0000.png").unlink()
    with pytest.raises(ValueError, match=r"Class folder '.*test/bird' has no images"):
        data.load("cifar10", cifar10_tree, "test")


def test_unknown_dataset_and_split(cifar10_tree):
    with pytest.raises(ValueError, match=r"'mnist'.*\['cifar10', 'cifar100', 'svhn_cropped'\]"):
        data.validate_source("mnist", cifar10_tree)
    with pytest.raises(ValueError, match="'mnist'"):
        data.load("mnist", cifar10_tree)
    with pytest.raises(ValueError, match=r"'validation'.*\['train', 'test'\]"):
        data.load("cifar10", cifar10_tree, "validation")


def test_no_tfds_copy_offline_fails_in_one_line_saying_how_to_use_local_data(tmp_path, monkeypatch):
    probed = []
    monkeypatch.setattr(tfds_source, "reachable", lambda host: probed.append(host) or False)
    for call in (data.validate_source, data.load):
        with pytest.raises(FileNotFoundError) as error:
            call("cifar10", None, tfds_data_dir=tmp_path)
        message = str(error.value)
        assert "\n" not in message
        assert "No TFDS copy of 'cifar10'" in message and str(tmp_path) in message
        assert "www.cs.toronto.edu (its download server) is out of reach" in message
        assert "--data_dir=" in message and "<class>/<image>" in message
    assert probed == ["www.cs.toronto.edu"] * 2
    assert not any(tmp_path.rglob("*.tfrecord*"))


def test_the_offline_probe_of_this_machine_answers_in_seconds():
    start = time.perf_counter()
    assert tfds_source.reachable("www.cs.toronto.edu") in (True, False)
    assert tfds_source.reachable("invalid.invalid") is False
    assert time.perf_counter() - start < 12


def test_no_tfds_copy_online_downloads_it_with_tfds(monkeypatch, capsys):
    calls = []
    builder = types.SimpleNamespace(
        is_prepared=lambda: False,
        data_dir="/fake/tfds/svhn_cropped/3.1.0",
        download_and_prepare=lambda: calls.append("download_and_prepare"),
    )
    monkeypatch.setattr(tfds_source, "tfds", types.SimpleNamespace(builder=lambda name, data_dir: builder))
    monkeypatch.setattr(tfds_source, "reachable", lambda host: host == "ufldl.stanford.edu")
    data.validate_source("svhn_cropped", None, splits=("test",))
    assert calls == ["download_and_prepare"]
    assert "downloading it from ufldl.stanford.edu" in capsys.readouterr().out


def test_tfds_source_is_read_without_download(monkeypatch):
    calls = {}
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)

    def fake_load(name, **kwargs):
        calls.update(kwargs, name=name)
        return tf.data.Dataset.from_tensor_slices((images, np.arange(5)))

    prepared = types.SimpleNamespace(is_prepared=lambda: True, data_dir="/fake/svhn_cropped/3.1.0")
    fake_tfds = types.SimpleNamespace(builder=lambda name, data_dir: prepared, load=fake_load, as_numpy=tfds.as_numpy)
    monkeypatch.setattr(tfds_source, "tfds", fake_tfds)
    loaded, labels, info = data.load("svhn_cropped", split="test")
    assert calls["name"] == "svhn_cropped" and calls["split"] == "test"
    assert calls["download"] is False and calls["as_supervised"] is True
    np.testing.assert_array_equal(loaded, images)
    assert loaded.dtype == np.uint8 and labels.dtype == np.int64 and info.name == "svhn_cropped"


def test_tfds_names_are_the_id_feature_of_each_loaded_example(monkeypatch, tmp_path):
    """On TFDS' mock of a prepared cifar10 (real reading code, random examples): names[i] is the id of images[i]."""
    monkeypatch.setattr(loading, "validate_source", lambda *args, **kwargs: None)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        images, labels, _ = data.load("cifar10", split="test", examples=5, seed=1, tfds_data_dir=tmp_path)
        names = data.load_names("cifar10", split="test", examples=5, seed=1, tfds_data_dir=tmp_path)
        every = tfds.as_numpy(tfds.load("cifar10", split="test", data_dir=tmp_path, download=False))
        by_id = {example["id"].decode(): (example["image"], example["label"]) for example in every}
    assert len(by_id) == 12 and len(set(names)) == 5
    for name, image, label in zip(names, images, labels):
        np.testing.assert_array_equal(by_id[name][0], image)
        assert by_id[name][1] == label


def test_tfds_names_without_an_id_feature_are_split_positions(monkeypatch):
    labels = np.array([0, 0, 1, 1, 1, 2])
    examples = {"image": np.zeros((6, 32, 32, 3), np.uint8), "label": labels}
    prepared = types.SimpleNamespace(
        is_prepared=lambda: True,
        data_dir="/fake/svhn_cropped/3.1.0",
        info=types.SimpleNamespace(features={"image": None, "label": None}),
    )
    fake_tfds = types.SimpleNamespace(
        builder=lambda name, data_dir: prepared,
        as_numpy=tfds.as_numpy,
        decode=tfds.decode,
        load=lambda name, **kwargs: tf.data.Dataset.from_tensor_slices(examples),
    )
    monkeypatch.setattr(tfds_source, "tfds", fake_tfds)
    assert data.load_names("svhn_cropped", split="test") == [f"test[{index}]" for index in range(6)]
    subset = data.load_names("svhn_cropped", split="test", examples=3, seed=2)
    assert subset == [f"test[{index}]" for index in data.balanced_subset(labels, 3, seed=2)]
    assert len({name for name in subset if name in ("test[0]", "test[1]")}) == 1


def test_cache_is_reused_and_invalidated(cifar10_tree, tmp_path):
    cache = tmp_path / "cache"
    first, _, _ = data.load("cifar10", cifar10_tree, "test", cache_dir=cache)
    (cache_file,) = cache.glob("cifar10-test-*.npz")
    again, _, _ = data.load("cifar10", cifar10_tree, "test", cache_dir=cache)
    np.testing.assert_array_equal(first, again)
    assert list(cache.glob("*.npz")) == [cache_file]
    changed_file = cifar10_tree / "test" / "deer" / "0000.png"
    write_image(changed_file, np.full((32, 32, 3), 200, np.uint8))
    os.utime(changed_file, ns=(0, changed_file.stat().st_mtime_ns + 10**9))
    changed, _, _ = data.load("cifar10", cifar10_tree, "test", cache_dir=cache)
    assert changed[4, 0, 0, 0] == 200 and first[4, 0, 0, 0] == 4
    assert len(list(cache.glob("*.npz"))) == 2


def test_unreadable_cache_is_ignored(cifar10_tree, tmp_path):
    cache = tmp_path / "cache"
    first, _, _ = data.load("cifar10", cifar10_tree, "test", cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(b"garbage")
    again, _, _ = data.load("cifar10", cifar10_tree, "test", cache_dir=cache)
    np.testing.assert_array_equal(first, again)


def test_cache_write_failure_only_warns(cifar10_tree, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.warns(UserWarning, match="Could not write the decoded-data cache"):
        images, _, _ = data.load("cifar10", cifar10_tree, "test", cache_dir=not_a_folder)
    assert images.shape == (10, 32, 32, 3)


@pytest.mark.parametrize("train_examples, expected_train", [(0, 30), (20, 20)])
def test_validation_is_held_out_of_the_training_split(tmp_path, train_examples, expected_train):
    root = write_tree(tmp_path / "cifar10", CIFAR10_ORDER, per_class=4)
    config = experiment_config.ExperimentConfig(
        dataset="cifar10", data_dir=str(root), train_examples=train_examples, validation_examples=10
    )
    splits = run_data.load_splits(config)
    assert (len(splits.train[0]), len(splits.validation[0]), len(splits.test[0])) == (expected_train, 10, 40)
    seen = {tuple(image[0, 0]) for image in np.concatenate([splits.train[0], splits.validation[0]])}
    assert len(seen) == expected_train + 10


def test_validation_as_large_as_the_training_split_is_refused(tmp_path):
    root = write_tree(tmp_path / "cifar10", CIFAR10_ORDER, per_class=1)
    config = experiment_config.ExperimentConfig(dataset="cifar10", data_dir=str(root), validation_examples=10)
    with pytest.raises(ValueError, match=r"--validation_examples=10 leaves no training examples"):
        run_data.load_splits(config)


def test_a_tfds_name_as_data_dir_reads_tfds_unless_such_a_folder_exists(tmp_path, monkeypatch, cifar10_tree):
    assert data.tfds_name("svhn_cropped") == "svhn_cropped" and data.tfds_name(cifar10_tree) is None
    assert data.tfds_name("") is None and data.tfds_name(None) is None
    assert data.local_dir("cifar10", "cifar10") is None and data.local_dir("cifar10", "") is None
    assert data.local_dir("cifar10", cifar10_tree) == Path(cifar10_tree)
    (tmp_path / "cwd" / "cifar10").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert data.local_dir("cifar10", "cifar10") == Path("cifar10") and data.tfds_name("cifar10") is None
    with pytest.raises(
        ValueError,
        match=r"^--data_dir=svhn_cropped names the TFDS dataset svhn_cropped, not "
        r"--dataset=cifar10: pass --dataset=svhn_cropped$",
    ):
        data.validate_source("cifar10", "svhn_cropped")


def test_trainers_fit_with_a_tfds_name_offline_stops_in_one_line_before_training(tmp_path):
    if tfds_source.reachable("www.cs.toronto.edu"):
        pytest.skip("this machine reaches www.cs.toronto.edu: the offline path cannot be tested here")
    start = time.perf_counter()
    result = run_cli(
        "trainers.fit",
        "--data_dir=cifar10",
        f"--output_dir={tmp_path / 'run'}",
        timeout=120,
        env={"TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No TFDS copy of 'cifar10' found in ") and "is out of reach" in last
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "run" / "config.json").exists()
