"""benchmarks.vs_peers: a clear message without foolbox, and foolbox's grid wired up correctly when it is there."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import vs_peers


def test_missing_foolbox_exits_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "foolbox", None)
    with pytest.raises(SystemExit, match=r'error: foolbox is not importable .*pip install -e "\.\[peers\]"'):
        vs_peers.import_foolbox()


def always_class_0(images, training=False):
    """Logits preferring class 0 whatever the image."""
    return tf.tile(tf.constant([[5.0, 0.0, 0.0]]), [tf.shape(images)[0], 1])


def test_foolbox_grid_breaks_exactly_the_misclassified_images():
    foolbox = pytest.importorskip("foolbox")
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 2, 0, 1])
    robust = vs_peers.foolbox_grid(foolbox, always_class_0, images, labels, batch_size=4)
    np.testing.assert_array_equal(robust, labels == 0)
