"""Shared fixtures: real CIFAR-10 slices from ../shared/data (no network access needed)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from helpers import REPO_ROOT

from invariance_tf import data

DATA_ROOT = Path(os.environ.get("INVARIANCE_TF_DATA", REPO_ROOT.parent / "shared" / "data"))
CIFAR10_DIR = DATA_ROOT / "cifar10"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds; run with -m slow")


@pytest.fixture(scope="session", autouse=True)
def decoded_data_cache(tmp_path_factory) -> Path:
    """Keeps the decoded-dataset cache of the whole test session out of the user's home."""
    cache = tmp_path_factory.mktemp("decoded_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(data.CACHE_ENV_VAR, str(cache))
        yield cache


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    if not (CIFAR10_DIR / "test").is_dir():
        pytest.fail(f"Real CIFAR-10 copy not found at {CIFAR10_DIR} (set INVARIANCE_TF_DATA)")
    return CIFAR10_DIR


@pytest.fixture(scope="session")
def cifar10_test_slice(cifar10_dir) -> tuple[np.ndarray, np.ndarray]:
    """100 real test images (10 per class), uint8 [100, 32, 32, 3], and their labels."""
    images, labels, _ = data.read_image_folder(cifar10_dir, "test", per_class=10)
    return images, labels


@pytest.fixture(scope="session")
def cifar10_train_slice(cifar10_dir) -> tuple[np.ndarray, np.ndarray]:
    """600 real training images (60 per class) and their labels."""
    images, labels, _ = data.read_image_folder(cifar10_dir, "train", per_class=60)
    return images, labels
