"""The report attack (how a model fails), checked against a brute-force loop in numpy on real CIFAR-10 images."""

from __future__ import annotations

import csv
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, train_small_cnn

from invariance_tf import evaluation, plots, transforms
from invariance_tf.evaluation import final_metrics
from invariance_tf.experiment_config import ExperimentConfig

TIE = 1e-3  # logit margins this close to 0 may flip between batchings
# The quickstart model computes in bfloat16: a resampling that differs by float rounding (XLA or not) can move its
# logits by about this much, so its argmax may flip wherever its top two logits are this close.
BFLOAT16_TIE = 0.05


def brute_force(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per transformation of the paper's grid, one `model.predict`; everything the report needs, in numpy.

    Returns per example: clean correct, the margins [T, N], whether each transformation keeps the clean argmax
    [T, N], the KL(f(x) || f(T x)) [T, N] in nats, the top-two logit gaps [T, N] and that of the clean logits [N].
    """
    clean = model.predict(images, batch_size=100, verbose=0).astype(np.float64)
    margins, agree, kl, gaps = [], [], [], []
    for row in transforms.grid():
        moved = transforms.transform(images, np.tile(row, (len(images), 1)), transforms.EVALUATION_RESAMPLING)
        logits = model.predict(moved, batch_size=100, verbose=0).astype(np.float64)
        true = logits[np.arange(len(labels)), labels].copy()
        agree.append(logits.argmax(axis=1) == clean.argmax(axis=1))
        gaps.append(top_two_gap(logits))
        kl.append((softmax(clean) * (log_softmax(clean) - log_softmax(logits))).sum(axis=1))
        logits[np.arange(len(labels)), labels] = -np.inf
        margins.append(true - logits.max(axis=1))
    return {
        "clean": clean.argmax(axis=1) == labels,
        "margins": np.stack(margins),
        "agree": np.stack(agree),
        "kl": np.stack(kl),
        "gaps": np.stack(gaps),
        "clean_gap": top_two_gap(clean),
    }


def top_two_gap(logits: np.ndarray) -> np.ndarray:
    """Per row, the largest logit minus the second largest: how far the argmax is from flipping."""
    ordered = np.sort(logits, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def robust(margins: np.ndarray, tie: float = TIE) -> tuple[np.ndarray, np.ndarray]:
    """(correct under every transformation, decided: no margin within `tie` of 0) per example."""
    return (margins > 0).all(axis=0), ~(np.abs(margins) <= tie).any(axis=0)


@pytest.fixture(scope="module")
def trained(cifar10_train_slice, cifar10_test_slice):
    """small_cnn trained for a few seconds, 50 test and 50 training images (the seen half gives grid survivors)."""
    model = train_small_cnn(*cifar10_train_slice, copies=3, epochs=6, seed=1)
    (test_x, test_y), (train_x, train_y) = cifar10_test_slice, cifar10_train_slice
    images = np.concatenate([test_x[::2], train_x[::12]]).astype(np.float32)
    return model, images, np.concatenate([test_y[::2], train_y[::12]])


@pytest.fixture(scope="module")
def graded(trained):
    model, images, labels = trained
    report = evaluation.evaluate(model, (images, labels), ["report"], batch_size=256)
    return report, brute_force(model, images, labels), labels


def test_report_fields_match_brute_force(graded):
    report, brute, labels = graded
    entry, result = report.summary["report"], report.results["report"]
    grid, decided = robust(brute["margins"])
    np.testing.assert_array_equal(result.correct[decided], grid[decided])
    assert 0 < grid.mean() < 1
    for row in entry["per_class"]:
        mine = labels == row["label"]
        assert row["examples"] == mine.sum()
        assert row["clean"] == pytest.approx(brute["clean"][mine].mean())
        assert abs(row["grid"] - grid[mine].mean()) <= (~decided[mine]).sum() / mine.sum()
    np.testing.assert_allclose(result.invariance, brute["agree"].mean(axis=0), atol=2.5 / 775)
    assert entry["mean_invariance"] == pytest.approx(brute["agree"].mean(), abs=1e-3)
    np.testing.assert_allclose(result.mean_kl, brute["kl"].mean(axis=0), rtol=2e-3, atol=1e-4)
    assert entry["mean_kl"] == pytest.approx(brute["kl"].mean(), rel=2e-3)
    params = transforms.grid()
    for box in entry["boxes"]:
        inside = (np.abs(params) <= np.asarray([box["shift"], box["shift"], box["angle"]]) + 1e-6).all(axis=1)
        correct, sure = robust(brute["margins"][inside])
        assert abs(box["accuracy"] - correct.mean()) <= (~sure).mean()
    worst_of_k = report.results["worst_of_k"].correct.mean()
    assert entry["worst_of_k_overestimate"] == pytest.approx(worst_of_k - grid.mean(), abs=(~decided).mean() + 1e-9)
    assert entry["worst_of_k_overestimate"] >= 0


def test_report_runs_the_grid_brute_with_boxes_and_profile(graded):
    report, _, labels = graded
    grid = report.results["grid"]
    assert grid.evaluations == len(labels) * 775
    assert grid.box_correct.shape == (len(labels), len(evaluation.NESTED_BOXES))
    np.testing.assert_array_equal(report.results["report"].correct, grid.correct)


def test_report_boxes_follow_the_limits(trained):
    model, images, labels = trained
    limits = (2.0, 2.0, 12.0)
    report = evaluation.evaluate(model, (images[:20], labels[:20]), ["report"], limits=limits, batch_size=256)
    boxes = [(box["shift"], box["angle"]) for box in report.summary["report"]["boxes"]]
    assert boxes == [(1.0, 4.0), (1.0, 8.0), (1.0, 12.0), (2.0, 4.0), (2.0, 8.0), (2.0, 12.0)]
    assert report.summary["report"]["boxes"][-1]["accuracy"] == report.summary["grid"]["accuracy"]
    assert (
        evaluation.nested_boxes()
        == evaluation.NESTED_BOXES
        == ((1.5, 1.5, 10.0), (1.5, 1.5, 20.0), (1.5, 1.5, 30.0), (3.0, 3.0, 10.0), (3.0, 3.0, 20.0), (3.0, 3.0, 30.0))
    )


def test_report_figure_is_written(graded, tmp_path):
    report, _, _ = graded
    path = tmp_path / "failure_report.png"
    plots.failure_report(report.summary["report"], report.results["report"].invariance, path, title="test")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_final_metrics_carry_the_report_of_the_grid_images(trained, graded):
    model, images, labels = trained
    config = ExperimentConfig(eval_report=True, eval_batch_size=256)
    grid = np.arange(0, len(labels), 2)
    metrics = final_metrics.robust_metrics(model, images, labels, config, grid)
    alone = evaluation.evaluate(model, (images[grid], labels[grid]), ["report"], batch_size=256).summary["report"]
    assert metrics["report_mean_kl"] == pytest.approx(alone["mean_kl"], rel=1e-5)
    assert metrics["report_boxes"] == alone["boxes"]
    assert metrics["grid_accuracy"] == alone["accuracy"]
    assert metrics["clean_accuracy"] == graded[0].summary["clean"]["accuracy"]
    assert metrics["test_examples"] == len(labels) and metrics["grid_examples"] == len(grid)
    assert "report_accuracy" not in metrics


RECORD = REPO_ROOT / "docs" / "results" / "quickstart_report"


def read_examples() -> dict[str, np.ndarray]:
    """The quickstart report's examples.csv, column by column (image names as strings, the rest as numbers)."""
    with open(RECORD / "examples.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return {name: np.asarray([row[name] for row in rows], str if name == "image" else np.float64) for name in rows[0]}


def test_quickstart_report_fields_are_its_per_image_columns():
    entry = json.loads((RECORD / "evaluation.json").read_text())["report"]
    columns = read_examples()
    labels, grid = columns["label"].astype(int), columns["grid_correct"].astype(bool)
    assert entry["examples"] == len(labels) and entry["accuracy"] == pytest.approx(grid.mean())
    expected = per_class(labels, columns["clean_correct"].astype(bool), grid)
    assert len(entry["per_class"]) == len(expected)
    for row, want in zip(entry["per_class"], expected):
        assert row == {key: pytest.approx(value) for key, value in want.items()}
    assert entry["mean_invariance"] == pytest.approx(columns["grid_invariance"].mean(), rel=1e-5)
    assert entry["invariance_quartiles"] == pytest.approx(np.percentile(columns["grid_invariance"], [25, 50, 75]))
    assert entry["mean_kl"] == pytest.approx(columns["grid_mean_kl"].mean(), rel=1e-5)
    for box in entry["boxes"]:
        assert box["accuracy"] == pytest.approx(columns[f"grid_within_{box['shift']:g}px_{box['angle']:g}deg"].mean())
    overestimate = columns["worst_of_k_correct"].mean() - grid.mean()
    assert entry["worst_of_k_overestimate"] == pytest.approx(overestimate)


def per_class(labels: np.ndarray, clean: np.ndarray, grid: np.ndarray) -> list[dict]:
    return [
        {
            "label": label,
            "examples": int((labels == label).sum()),
            "clean": clean[labels == label].mean(),
            "grid": grid[labels == label].mean(),
        }
        for label in range(10)
    ]


def test_quickstart_report_matches_brute_force_on_its_first_images(cifar10_dir):
    columns = read_examples()
    chosen = np.arange(30)
    images = np.stack(
        [tf.io.decode_jpeg(tf.io.read_file(str(cifar10_dir / name))).numpy() for name in columns["image"][chosen]]
    ).astype(np.float32)
    labels = columns["label"][chosen].astype(np.int64)
    model = keras.saving.load_model(REPO_ROOT / "models" / "quickstart.keras")
    brute = brute_force(model, images, labels)
    grid, decided = robust(brute["margins"], BFLOAT16_TIE)
    np.testing.assert_array_equal(columns["grid_correct"][chosen][decided], grid[decided])
    assert decided.sum() >= 10
    clear = brute["clean_gap"] > BFLOAT16_TIE
    np.testing.assert_array_equal(columns["clean_correct"][chosen][clear], brute["clean"][clear])
    flippable = (brute["gaps"] <= BFLOAT16_TIE).sum(axis=0)
    difference = np.abs(columns["grid_invariance"][chosen] - brute["agree"].mean(axis=0))
    assert (difference[clear] <= (flippable[clear] + 0.5) / 775).all()
    assert clear.sum() >= 20 and (difference[clear] < 1 / 775).mean() > 0.5
    np.testing.assert_allclose(columns["grid_mean_kl"][chosen], brute["kl"].mean(axis=0), rtol=0.1, atol=5e-3)
