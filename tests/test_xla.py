"""The whole train step under XLA: the same weights as uncompiled, for every adversary, h and CE mode."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT

from invariance_tf import adversaries, networks, precision, transforms
from invariance_tf.model import InvarianceModel

STEPS = 2
CASES = {
    "random-kl-mix": (lambda: adversaries.RandomTransform(), dict(ce_on="mix", h="kl", lambda_reg=1.0)),
    "worst_of_k-l2-rob-own-ce-reference": (
        lambda: adversaries.WorstOfK(k=3, objective="l2", resampling="reference"),
        dict(ce_on="rob", h="l2", lambda_reg=1.0, ce_adversary_objective="ce"),
    ),
    "worst_of_k-kl-mix-shared": (
        lambda: adversaries.WorstOfK(k=3, objective="kl", shared_candidates=True),
        dict(ce_on="mix", h="kl", lambda_reg=2.0, ce_adversary_objective="ce"),
    ),
    "spgd-kl-mix-own-ce": (
        lambda: adversaries.SPGD(steps=2, objective="kl"),
        dict(ce_on="mix", h="kl", lambda_reg=1.0, ce_adversary_objective="ce"),
    ),
    "spgd-l2-rob-restarts": (
        lambda: adversaries.SPGD(steps=2, objective="ce", restarts=2, resampling="reference"),
        dict(ce_on="rob", h="l2", lambda_reg=0.5),
    ),
}


def trained_weights(images: np.ndarray, labels: np.ndarray, case: str, jit_compile: bool) -> list[np.ndarray]:
    """The network's weights after `STEPS` steps of `case` from seed 0's initialisation."""
    adversary, arguments = CASES[case]
    keras.utils.set_random_seed(0)
    model = InvarianceModel(networks.build("small_cnn"), adversary=adversary(), seed=3, **arguments)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    for _ in range(STEPS):
        model.train_on_batch(images, labels)
    assert model.jit_compile is jit_compile
    return [w.numpy() for w in model.network.weights]


SLOW = ("worst_of_k-l2-rob-own-ce-reference", "spgd-l2-rob-restarts")
"""The cases whose reference resampling or restarts make them the slowest (> 10 s each on 2 shared cores)."""


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_compiled_step_gives_the_uncompiled_weights(cifar10_train_slice, case):
    images, labels = cifar10_train_slice[0][:8].astype(np.float32), cifar10_train_slice[1][:8]
    plain = trained_weights(images, labels, case, jit_compile=False)
    compiled = trained_weights(images, labels, case, jit_compile=True)
    for a, b in zip(plain, compiled):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", [[3, 1], [-1, 3], [2**33 + 5, 7]])
def test_draws_are_equal_compiled_or_not(seed):
    seed = transforms.xla_safe_seed(seed)
    draw = lambda: transforms.sample_uniform(64, (3, 3, 30), seed)  # noqa: E731
    np.testing.assert_array_equal(draw(), tf.function(draw, jit_compile=True)())
    split = lambda: transforms.split_seed(seed, 3)  # noqa: E731
    np.testing.assert_array_equal(split(), tf.function(split, jit_compile=True)())


def test_stateless_uniform_is_tfs_own_draw():
    seed = tf.constant([5, 9], tf.int64)
    np.testing.assert_array_equal(
        transforms.stateless_uniform([129, 3], seed, -2.0, 3.0), tf.random.stateless_uniform([129, 3], seed, -2.0, 3.0)
    )


def test_device_report_runs_on_a_tiny_budget_and_writes_its_json(tmp_path):
    out = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.device_report", "--budget=tiny", "--rows=at_kl", f"--out={out}"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    report = json.loads(out.read_text())
    assert report["budget"] == "tiny" and report["paper_steps"] == 80_000
    assert report["precision"]["policy"] in precision.POLICIES
    (row,) = report["rows"]
    assert row["row"] == "at_kl" and row["faster"] in ("xla", "no_xla")
    assert row["step_ms_xla_off"] > 0 and row["step_ms_xla_on"] > 0 and row["projected_hours"] > 0
