"""Semimetrics h: exact properties and independent numpy values."""

from __future__ import annotations

import numpy as np
import pytest

from invariance_tf import semimetrics


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 10)).astype(np.float32) * 3, rng.normal(size=(64, 10)).astype(np.float32) * 3


def test_kl_is_zero_on_equal_inputs_and_nonnegative(logits):
    a, b = logits
    np.testing.assert_allclose(semimetrics.kl(a, a), 0.0, atol=1e-6)
    assert np.all(semimetrics.kl(a, b).numpy() >= 0)


def test_kl_matches_numpy(logits):
    a, b = logits
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    q = np.exp(b - b.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(semimetrics.kl(a, b), (p * np.log(p / q)).sum(1), rtol=1e-4, atol=1e-5)


def test_l2_is_symmetric_squared_distance(logits):
    a, b = logits
    np.testing.assert_allclose(semimetrics.l2(a, b), semimetrics.l2(b, a))
    np.testing.assert_allclose(semimetrics.l2(a, b), ((a - b) ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(semimetrics.l2(a, a), 0.0)


def test_registry_and_unknown_name():
    assert semimetrics.get("kl") is semimetrics.kl and semimetrics.get("l2") is semimetrics.l2
    with pytest.raises(ValueError, match=r"'js'.*\['kl', 'l2'\]"):
        semimetrics.get("js")
