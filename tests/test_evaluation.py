"""Robust evaluation on a small CNN trained here on real CIFAR-10 images."""

from __future__ import annotations

import dataclasses
import gc
import os
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import train_small_cnn
from reference_code import reference_code_tf

from invariance_tf import data, evaluation, networks, transforms
from invariance_tf.evaluation import attacks, chunks

TIE = 1e-3  # logit margins this close to 0 may flip between batchings; comparisons skip them
MILD = {"limits": (1.0, 1.0, 5.0), "granularity": (3, 3, 5)}


@pytest.fixture(scope="module")
def model(cifar10_train_slice) -> keras.Model:
    """small_cnn trained for a few seconds on 600 images and 3 randomly transformed copies."""
    return train_small_cnn(*cifar10_train_slice, copies=3, epochs=6, seed=1)


@pytest.fixture(scope="module")
def examples(cifar10_test_slice, cifar10_train_slice) -> tuple[np.ndarray, np.ndarray]:
    """50 test and 50 training images (5 per class each); the seen half gives grid survivors."""
    (test_x, test_y), (train_x, train_y) = cifar10_test_slice, cifar10_train_slice
    return (
        np.concatenate([test_x[::2], train_x[::12]]).astype(np.float32),
        np.concatenate([test_y[::2], train_y[::12]]),
    )


@pytest.fixture(scope="module")
def brute(model, examples) -> evaluation.RobustResult:
    return evaluation.grid_accuracy(model, *examples, method="brute")


def naive_margins(model, images, labels, params) -> np.ndarray:
    """Margins [T, N] from one `model.predict` per transformation, without the evaluation code.

    The images are resampled as the attacks resample by default (`transforms.EVALUATION_RESAMPLING`).
    """
    margins = []
    for row in params:
        moved = transforms.transform(images, np.tile(row, (len(images), 1)), transforms.EVALUATION_RESAMPLING)
        logits = model.predict(moved, batch_size=50, verbose=0)
        true = logits[np.arange(len(labels)), labels]
        logits[np.arange(len(labels)), labels] = -np.inf
        margins.append(true - logits.max(axis=1))
    return np.stack(margins)


def assert_correct_matches(correct, margins):
    """`correct` [N] agrees with all(margins > 0) over axis 0, except where the minimum is a near tie."""
    worst = margins.min(axis=0)
    clear = np.abs(worst) > TIE
    np.testing.assert_array_equal(correct[clear], worst[clear] > 0)


TRAP = (16, 16)  # (row, column) of the pixel that `trap_model` watches


def trap_model(images, training=False):
    """Two logits: 100 for class 0, and class 1's logit is the red value at the TRAP pixel."""
    watched = images[:, TRAP[0], TRAP[1], 0]
    return tf.stack([tf.fill(tf.shape(watched), 100.0), watched], axis=-1)


@pytest.mark.parametrize("batch_size", [7, 64, 1024])
def test_every_transform_is_tried(batch_size):
    """Example i has one bright dot that shift i of the grid moves onto the trap, and no other does.

    Every grid transformation is the only mistake of some example, so early exit
    agrees with brute force only if it tries them all, and both must report
    that shift as the worst transformation.
    """
    params = transforms.grid(limits=(2, 2, 0), granularity=(5, 5, 1))
    images = np.zeros((len(params) + 3, 32, 32, 3), np.float32)
    for i, (dx, dy, _) in enumerate(params):
        images[i, TRAP[0] - int(dy), TRAP[1] - int(dx), 0] = 255.0
    images[len(params) :, 2, 2, 0] = 255.0  # far from the trap: correct under every shift
    labels = np.zeros(len(images), np.int64)
    labels[12] = 1  # the identity's dot starts on the trap: right there, wrong under every shift
    expected = np.arange(len(images)) >= len(params)
    for method in evaluation.METHODS:
        result = evaluation.grid_accuracy(
            trap_model, images, labels, method=method, batch_size=batch_size, limits=(2, 2, 0), granularity=(5, 5, 1)
        )
        np.testing.assert_array_equal(result.correct, expected, err_msg=method)
        np.testing.assert_array_equal(
            result.worst_transform[: len(params)][np.arange(len(params)) != 12],
            np.delete(params, 12, axis=0),
            err_msg=method,
        )


def test_early_exit_matches_brute_on_full_grid(model, examples, brute):
    early = evaluation.grid_accuracy(model, *examples, method="early_exit")
    np.testing.assert_array_equal(early.correct, brute.correct)
    assert early.accuracy == brute.accuracy
    assert 0 < brute.accuracy < 0.5
    assert brute.evaluations == len(examples[0]) * 775
    assert early.evaluations < 0.3 * brute.evaluations
    assert early.per_transform_accuracy is None
    survivors = early.correct
    np.testing.assert_array_equal(early.worst_transform[survivors], brute.worst_transform[survivors])


def test_early_exit_matches_brute_on_mild_grid(model, examples):
    brute = evaluation.grid_accuracy(model, *examples, method="brute", batch_size=128, **MILD)
    early = evaluation.grid_accuracy(model, *examples, method="early_exit", batch_size=128, **MILD)
    assert 0.2 < brute.accuracy < 0.8
    np.testing.assert_array_equal(early.correct, brute.correct)


@pytest.mark.parametrize("method", evaluation.METHODS)
def test_nested_boxes_match_a_naive_loop_per_box(model, examples, method):
    images, labels = examples
    params = transforms.grid(granularity=(3, 3, 7))
    boxes = ((0.0, 0.0, 10.0), (3.0, 3.0, 10.0), (0.0, 0.0, 30.0))
    result = evaluation.grid_accuracy(
        model, images, labels, method=method, granularity=(3, 3, 7), boxes=boxes, batch_size=64
    )
    margins = naive_margins(model, images, labels, params)
    for column, box in enumerate(boxes):
        inside = (np.abs(params) <= np.asarray(box) + 1e-6).all(axis=1)
        assert_correct_matches(result.box_correct[:, column], margins[inside])
    assert_correct_matches(result.correct, margins)
    assert 0 < result.box_correct.mean() < 1


def test_early_exit_with_boxes_agrees_with_brute_and_still_exits_early(model, examples, brute):
    boxes = evaluation.NESTED_BOXES
    early = evaluation.grid_accuracy(model, *examples, boxes=boxes)
    full = evaluation.grid_accuracy(model, *examples, method="brute", boxes=boxes)
    np.testing.assert_array_equal(early.box_correct, full.box_correct)
    np.testing.assert_array_equal(early.correct, brute.correct)
    np.testing.assert_array_equal(early.box_correct[:, -1], brute.correct)
    assert (early.box_correct[:, 0] >= early.box_correct[:, 1]).all()
    assert early.evaluations < 0.5 * brute.evaluations


def test_profile_matches_a_naive_loop_in_numpy(model, examples):
    images, labels = examples
    params = transforms.grid(granularity=(3, 3, 5))
    result = evaluation.grid_accuracy(
        model, images, labels, method="brute", granularity=(3, 3, 5), profile=True, batch_size=64
    )
    clean = model.predict(images, batch_size=50, verbose=0).astype(np.float64)
    agree, divergence = [], []
    for row in params:
        moved = transforms.transform(images, np.tile(row, (len(images), 1)), transforms.EVALUATION_RESAMPLING)
        logits = model.predict(moved, batch_size=50, verbose=0).astype(np.float64)
        agree.append(logits.argmax(axis=1) == clean.argmax(axis=1))
        p, log_p = numpy_softmax(clean)
        _, log_q = numpy_softmax(logits)
        divergence.append((p * (log_p - log_q)).sum(axis=1))
    agree, divergence = np.mean(agree, axis=0), np.mean(divergence, axis=0)
    np.testing.assert_allclose(result.invariance, agree, atol=1.5 / len(params))
    assert (np.abs(result.invariance - agree) > 1e-6).mean() < 0.05
    np.testing.assert_allclose(result.mean_kl, divergence, rtol=1e-3, atol=1e-4)
    assert 0 < result.invariance.mean() < 1 and result.mean_kl.max() > 0.01


def test_profile_needs_brute(model, examples):
    with pytest.raises(ValueError, match="profile=True needs method='brute'"):
        evaluation.grid_accuracy(model, *examples, profile=True)


def numpy_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and log-probabilities of `logits` [N, K], in float64."""
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    return np.exp(log_p), log_p


def test_a_box_outside_the_grid_is_refused(model, examples):
    with pytest.raises(ValueError, match=r"box \[3.0, 3.0, 40.0\] is not inside the grid's limits"):
        evaluation.grid_accuracy(model, *examples, boxes=[(3, 3, 40)])


def test_brute_matches_naive_loop(model, examples):
    images, labels = examples
    result = evaluation.grid_accuracy(model, images, labels, method="brute", batch_size=300, granularity=(3, 3, 5))
    params = transforms.grid(granularity=(3, 3, 5))
    margins = naive_margins(model, images, labels, params)
    assert_correct_matches(result.correct, margins)
    near_ties = (np.abs(margins) <= TIE).sum(axis=1)
    np.testing.assert_array_less(
        np.abs(result.per_transform_accuracy - (margins > 0).mean(axis=1)), (near_ties + 0.5) / len(labels)
    )
    worst = params[margins.argmin(axis=0)]
    unique = np.sort(margins, axis=0)[1] - margins.min(axis=0) > TIE
    np.testing.assert_allclose(result.worst_transform[unique], worst[unique])


def test_per_transform_accuracy_spot_check(model, examples, brute):
    images, labels = examples
    params = transforms.grid()
    picked = [int(np.argmin(np.abs(params).sum(axis=1))), 0, 387, 774]
    margins = naive_margins(model, images, labels, params[picked])
    for index, margin in zip(picked, margins):
        near_ties = (np.abs(margin) <= TIE).sum()
        assert abs(brute.per_transform_accuracy[index] * len(labels) - (margin > 0).sum()) <= near_ties
    assert brute.per_transform_accuracy[picked[0]] == evaluation.clean_accuracy(model, images, labels)


def test_finer_grids_are_never_more_lenient(model, examples, brute):
    """The 5 x 5 x 31 grid contains the 3 x 3 x 11 grid, which contains the identity.

    So correct under the finer grid implies correct under the coarser one, which implies clean-correct.
    """
    images, labels = examples
    coarse_params = transforms.grid(granularity=(3, 3, 11))
    full_params = {tuple(row) for row in np.round(transforms.grid(), 6)}
    assert {tuple(row) for row in np.round(coarse_params, 6)} <= full_params and (0, 0, 0) in full_params
    coarse = evaluation.grid_accuracy(model, images, labels, method="brute", granularity=(3, 3, 11))
    clean_correct = naive_margins(model, images, labels, np.zeros((1, 3), np.float32))[0] > 0
    assert not np.any(brute.correct & ~coarse.correct)
    assert not np.any(coarse.correct & ~clean_correct)
    assert brute.accuracy <= coarse.accuracy <= clean_correct.mean()
    assert brute.accuracy < clean_correct.mean()


def test_uint8_images_give_the_same_answers(model, examples):
    images, labels = examples
    as_uint8 = evaluation.grid_accuracy(model, images.astype(np.uint8), labels, method="brute", **MILD)
    as_float = evaluation.grid_accuracy(model, images, labels, method="brute", **MILD)
    np.testing.assert_array_equal(as_uint8.correct, as_float.correct)
    np.testing.assert_array_equal(as_uint8.per_transform_accuracy, as_float.per_transform_accuracy)


def test_worst_of_k_is_reproducible(model, examples):
    first = evaluation.worst_of_k_accuracy(model, *examples, k=3, seed=(5, 6), batch_size=64)
    again = evaluation.worst_of_k_accuracy(model, *examples, k=3, seed=(5, 6), batch_size=100)
    other = evaluation.worst_of_k_accuracy(model, *examples, k=3, seed=(7, 8))
    np.testing.assert_array_equal(first.worst_transform, again.worst_transform)
    np.testing.assert_array_equal(first.correct, again.correct)
    assert not np.array_equal(first.worst_transform, other.worst_transform)
    assert first.per_transform_accuracy is None
    assert first.evaluations == 3 * len(examples[0])


@pytest.mark.parametrize("method", ["brute", "early_exit", "worst_of_k", "spgd"])
def test_correct_iff_correct_at_worst_transform(model, examples, brute, method):
    images, labels = examples
    if method == "brute":
        result = brute
    elif method == "early_exit":
        result = evaluation.grid_accuracy(model, images, labels, method="early_exit", batch_size=200)
    elif method == "worst_of_k":
        result = evaluation.worst_of_k_accuracy(model, images, labels, k=5, seed=(1, 2))
    else:
        result = evaluation.spgd_accuracy(model, images, labels, steps=3, seed=(1, 2), batch_size=64)
    assert result.worst_transform.shape == (len(labels), 3)
    assert np.all(np.abs(result.worst_transform) <= np.asarray(transforms.DEFAULT_LIMITS) + 1e-5)
    moved = transforms.transform(images, result.worst_transform, transforms.EVALUATION_RESAMPLING)
    logits = model.predict(moved, batch_size=50, verbose=0)
    true = logits[np.arange(len(labels)), labels]
    logits[np.arange(len(labels)), labels] = -np.inf
    assert_correct_matches(result.correct, (true - logits.max(axis=1))[None])
    assert result.accuracy == pytest.approx(result.correct.mean())


def test_spgd_finds_mistakes(model, examples):
    images, labels = examples
    result = evaluation.spgd_accuracy(model, images, labels, steps=5, seed=(0, 1))
    assert result.accuracy < evaluation.clean_accuracy(model, images, labels) - 0.1


def test_progress_bar(model, examples, capsys):
    evaluation.grid_accuracy(model, *examples, method="early_exit", verbose=True, **MILD)
    assert "pair" in capsys.readouterr().out


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, y: evaluation.grid_accuracy(m, x, y, method="exhaustive"), "'exhaustive'.*brute"),
        (lambda m, x, y: evaluation.grid_accuracy(m, x, y[:-1]), r"\(99,\)"),
        (lambda m, x, y: evaluation.grid_accuracy(m, x[0], y), r"\(32, 32, 3\)"),
        (lambda m, x, y: evaluation.grid_accuracy(m, x, y, batch_size=0), "batch_size.*0"),
        (lambda m, x, y: evaluation.grid_accuracy(m, x, y, granularity=(5, 0, 31)), "granularity"),
        (lambda m, x, y: evaluation.grid_accuracy(m, x, y, limits=(3, 3)), "limits"),
        (lambda m, x, y: evaluation.clean_accuracy(m, x, y.astype(np.float32)), "float32"),
        (lambda m, x, y: evaluation.worst_of_k_accuracy(m, x, y, k=0), "k.*0"),
        (lambda m, x, y: evaluation.worst_of_k_accuracy(m, x, y, seed=3), "seed.*3"),
        (lambda m, x, y: evaluation.spgd_accuracy(m, x, y, steps=0), "steps=0"),
    ],
)
def test_bad_arguments_raise(model, examples, call, message):
    with pytest.raises(ValueError, match=message):
        call(model, *examples)


def test_keep_lowest_are_the_lowest_margins(model, examples):
    images, labels = examples
    params = transforms.grid(**MILD)
    result = evaluation.grid_accuracy(model, images, labels, method="brute", batch_size=100, keep_lowest=4, **MILD)
    margins = naive_margins(model, images, labels, params)  # [T, N]
    ranked = np.sort(margins, axis=0)
    clear = np.all(np.diff(ranked[:5], axis=0) > TIE, axis=0)  # the 4 lowest are distinct beyond float noise
    assert clear.sum() > len(labels) // 2
    expected = params[np.argsort(margins, axis=0)[:4]].transpose(1, 0, 2)
    np.testing.assert_array_equal(result.lowest_transforms[clear], expected[clear])
    np.testing.assert_array_equal(result.lowest_transforms[:, 0], result.worst_transform)
    np.testing.assert_allclose(result.margin, margins.min(axis=0), atol=TIE)
    early = evaluation.grid_accuracy(model, images, labels, keep_lowest=4, batch_size=100, **MILD)
    survivors = early.correct
    np.testing.assert_array_equal(early.lowest_transforms[survivors], result.lowest_transforms[survivors])


@pytest.fixture(scope="module")
def refined(model, examples, brute):
    # composed: its translation is continuous, so S-PGD has a gradient in dx and dy as well as in the angle
    grid = evaluation.grid_accuracy(model, *examples, keep_lowest=3, resampling="composed")
    return grid, evaluation.refine(model, *examples, grid, steps=10, resampling="composed")


def test_refined_attack_is_at_least_as_strong_as_the_grid(model, examples, refined):
    images, labels = examples
    grid, result = refined
    assert not np.any(result.correct & ~grid.correct)
    for subset in [slice(None), slice(0, 50), slice(50, None), *(labels == c for c in range(10))]:
        assert result.correct[subset].mean() <= grid.correct[subset].mean()
    broken = grid.correct & ~result.correct
    print(f"refined attack: {broken.sum()} of {grid.correct.sum()} grid survivors broken")
    assert broken.sum() >= 1
    moved = transforms.transform(images[broken], result.worst_transform[broken], "composed")
    logits = model.predict(moved, verbose=0)
    assert np.all(logits.argmax(axis=1) != labels[broken])
    assert np.all(np.abs(result.worst_transform) <= np.asarray(transforms.DEFAULT_LIMITS) + 1e-5)
    off_grid = np.abs(result.worst_transform[broken][:, None] - transforms.grid()[None]).max(axis=2).min(axis=1)
    assert np.all(off_grid > 1e-3)
    assert 0 < result.evaluations <= grid.correct.sum() * 3 * 11


def test_refine_searches_only_grid_survivors(model, examples):
    images, labels = examples
    grid = evaluation.grid_accuracy(model, images, labels, keep_lowest=2)
    none_survive = dataclasses.replace(grid, correct=np.zeros_like(grid.correct))
    result = evaluation.refine(model, images, labels, none_survive, steps=4)
    assert result.evaluations == 0 and result.accuracy == 0


def test_resumable_matches_one_run_and_resumes(model, examples, tmp_path):
    images, labels = examples
    whole = evaluation.grid_accuracy(model, images, labels, keep_lowest=3, batch_size=64)
    first = evaluation.resumable("grid", model, images, labels, tmp_path, chunk_size=30, keep_lowest=3, batch_size=64)
    np.testing.assert_array_equal(first.correct, whole.correct)
    survivors = whole.correct
    np.testing.assert_array_equal(first.lowest_transforms[survivors], whole.lowest_transforms[survivors])
    assert first.resumed_examples == 0
    chunks = sorted(next(tmp_path.iterdir()).glob("chunk_*.npz"))
    assert len(chunks) == 4
    chunks[2].unlink()
    again = evaluation.resumable("grid", model, images, labels, tmp_path, chunk_size=30, keep_lowest=3, batch_size=64)
    assert again.resumed_examples == 70
    for field in ("correct", "worst_transform", "margin", "lowest_transforms"):
        np.testing.assert_array_equal(getattr(again, field), getattr(first, field), err_msg=field)
    assert again.evaluations == first.evaluations
    changed = evaluation.resumable("grid", model, images, labels, tmp_path, chunk_size=30, keep_lowest=2, batch_size=64)
    assert changed.resumed_examples == 0 and len(list(tmp_path.iterdir())) == 2


def test_resumable_random_attacks_and_brute_per_transform(model, examples, tmp_path):
    images, labels = examples
    brute = evaluation.resumable("grid", model, images, labels, tmp_path, chunk_size=40, method="brute", **MILD)
    whole = evaluation.grid_accuracy(model, images, labels, method="brute", **MILD)
    np.testing.assert_allclose(brute.per_transform_accuracy, whole.per_transform_accuracy, atol=1e-12)
    kwargs = {"k": 3, "seed": (1, 2), "chunk_size": 40}
    first = evaluation.resumable("worst_of_k", model, images, labels, tmp_path, **kwargs)
    again = evaluation.resumable("worst_of_k", model, images, labels, tmp_path, **kwargs)
    assert again.resumed_examples == len(labels)
    np.testing.assert_array_equal(again.worst_transform, first.worst_transform)
    for seed, passed in (((1, 2), {"seed": (1, 2)}), (evaluation.DEFAULT_SEED, {})):
        chunked = evaluation.resumable(
            "worst_of_k", model, images, labels, tmp_path / "default", k=3, chunk_size=40, **passed
        )
        second_chunk = evaluation.worst_of_k_accuracy(
            model,
            images[40:80],
            labels[40:80],
            k=3,
            seed=tf.random.experimental.stateless_fold_in(tf.constant(seed, tf.int64), 1).numpy(),
        )
        np.testing.assert_array_equal(chunked.worst_transform[40:80], second_chunk.worst_transform)
        assert not np.array_equal(chunked.worst_transform[:40], chunked.worst_transform[40:80])
    with pytest.raises(ValueError, match=r"needs grid="):
        evaluation.resumable("refined", model, images, labels, tmp_path)


def pinned_model() -> keras.Model:
    """A linear classifier of 8 x 8 images with fixed layer names and weights: the same fingerprint in every run."""
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(name="flatten"), keras.layers.Dense(4, name="logits")],
        name="pinned",
    )
    model.set_weights(
        [np.linspace(-1, 1, 8 * 8 * 3 * 4, dtype=np.float32).reshape(192, 4), np.arange(4, dtype=np.float32) / 10]
    )
    return model


def test_state_keys_are_those_saved_before_the_evaluation_package(tmp_path):
    """The digests below were computed by the single-module `invariance_tf/evaluation.py` (commit c9bc0d9).

    Equal folder names are what lets an evaluation killed before the move resume after it.
    """
    model = pinned_model()
    images = (np.arange(6 * 8 * 8 * 3) % 256).astype(np.uint8).reshape(6, 8, 8, 3)
    labels = np.arange(6) % 4
    assert evaluation.fingerprint(model) == "c7a8e95b81e63a7d0c09a81ae2ad896ecb4aecca34258672d31646e13fc3f9f8"
    evaluation.resumable(
        "grid",
        model,
        images,
        labels,
        tmp_path,
        chunk_size=4,
        method="brute",
        limits=(1.0, 1.0, 5.0),
        granularity=(1, 1, 3),
        batch_size=8,
        keep_lowest=2,
    )
    evaluation.resumable(
        "worst_of_k",
        model,
        images,
        labels,
        tmp_path,
        chunk_size=4,
        k=2,
        seed=(3, 0),
        limits=(1.0, 1.0, 5.0),
        resampling="reference",
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grid-106361d7723259e9", "worst_of_k-6587ea47be96103c"]
    grid = evaluation.RobustResult(
        accuracy=0.5,
        correct=np.arange(6) % 2 == 0,
        worst_transform=np.zeros((6, 3), np.float32),
        margin=np.linspace(-1, 1, 6).astype(np.float32),
    )
    refined = {"grid": grid, "steps": 3, "resampling": "composed", "batch_size": None}
    assert chunks._state_key("refined", model, images, labels, 4, None, refined) == "f4fcb21d890adac3"
    onnx_like = evaluation.Classifier(
        lambda x: x, (None, 3, 8, 8), [], layout="nchw", mean=[0.5], std=[0.25], digest="ab" * 32
    )
    assert evaluation.fingerprint(onnx_like) == "284fab151e528196d6fcca18178d13698f7be651d3a948cff9dc90eb23a96c8f"
    normalised = evaluation.Classifier(lambda x: x, (None, 8, 8, 3), model.weights, mean=[1.0, 2.0, 3.0])
    assert evaluation.fingerprint(normalised) == "b2a3eec6ed5e6bf0b30fa83085000373b467ef02e6f7edfdf82f794e87234942"


def test_run_attack_runs_registered_attacks_in_one_pass_or_resumable(model, examples, tmp_path):
    images, labels = examples
    direct = evaluation.worst_of_k_accuracy(model, images, labels, k=2, seed=(1, 2), limits=MILD["limits"])
    by_name = evaluation.run_attack("worst_of_k", model, images, labels, k=2, seed=(1, 2), limits=MILD["limits"])
    np.testing.assert_array_equal(by_name.worst_transform, direct.worst_transform)
    clean = evaluation.run_attack("clean", model, images, labels, state_dir=tmp_path, verbose=True)
    np.testing.assert_array_equal(clean.margin, evaluation.clean_result(model, images, labels).margin)
    assert not list(tmp_path.iterdir())
    saved = evaluation.run_attack("grid", model, images, labels, state_dir=tmp_path, chunk_size=60, **MILD)
    assert [path.name[:5] for path in tmp_path.iterdir()] == ["grid-"] and saved.resumed_examples == 0
    with pytest.raises(ValueError, match=r"Unknown attack 'exhaustive'; valid attacks are \['clean', 'worst_of_k'"):
        evaluation.run_attack("exhaustive", model, images, labels)
    with pytest.raises(ValueError, match=r"Unknown resumable attack 'clean'; valid attacks are \['worst_of_k'"):
        evaluation.resumable("clean", model, images, labels, tmp_path)


def test_attacks_run_after_their_inputs_and_take_the_shared_settings_they_name():
    assert attacks.with_inputs(["refined"]) == ["grid", "refined"]
    assert attacks.with_inputs(["refined", "clean", "grid"]) == ["clean", "grid", "refined"]
    with pytest.raises(ValueError, match=r"Unknown attacks \['nope'\]"):
        attacks.with_inputs(["grid", "nope"])
    shared = {"limits": (1.0, 1.0, 5.0), "batch_size": 8, "seed": (0, 0), "verbose": True}
    assert evaluation.ATTACKS["clean"].accepted(shared) == {"batch_size": 8}
    assert evaluation.ATTACKS["worst_of_k"].accepted(shared) == {
        "limits": (1.0, 1.0, 5.0),
        "batch_size": 8,
        "seed": (0, 0),
    }
    assert evaluation.ATTACKS["grid"].accepted(shared) == {"limits": (1.0, 1.0, 5.0), "batch_size": 8, "verbose": True}
    assert [name for name, attack in evaluation.ATTACKS.items() if attack.gradients] == ["spgd", "refined"]


def test_traced_functions_do_not_keep_the_model_alive(examples):
    images, labels = examples
    model = networks.build("small_cnn")
    evaluation.grid_accuracy(model, images[:4], labels[:4], granularity=(1, 1, 3))
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_fingerprint_follows_the_weights(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    assert evaluation.fingerprint(clone) == evaluation.fingerprint(model)
    weights = clone.get_weights()
    weights[-1] = weights[-1] + 1e-6
    clone.set_weights(weights)
    assert evaluation.fingerprint(clone) != evaluation.fingerprint(model)


@pytest.mark.parametrize(
    "bad_model, message",
    [
        (lambda x, training=False: x[:, 0, 0, :2], r"float \[batch, 10\].*\[2, 2\]"),
        (lambda x, training=False: tf.reshape(x, [-1])[:20], r"\[batch, 10\].*\[20\]"),
        (lambda x, training=False: tf.zeros([2, 10], tf.int32), "int32"),
        (lambda x, training=False: tf.reshape(x, [2, 28, 28, -1]), "fails on a batch of shape"),
    ],
)
def test_check_classifier_rejects_a_model_that_does_not_fit(examples, bad_model, message):
    with pytest.raises(ValueError, match=message):
        evaluation.check_classifier(bad_model, examples[0], num_classes=10)


def test_check_classifier_reads_the_declared_input_shape(model, examples):
    evaluation.check_classifier(model, examples[0], num_classes=10)
    with pytest.raises(ValueError, match=r"\[batch, 28, 28, 3\].*\[None, 32, 32, 3\]"):
        evaluation.check_classifier(model, np.zeros((4, 28, 28, 3), np.float32), num_classes=10)


@pytest.mark.slow
def test_reference_resampling_grid_matches_a_grid_over_the_reference_code_on_500_test_images(model, cifar10_dir):
    """`grid_accuracy(resampling="reference")` matches the reference code on all 775 transformations.

    Against the reference's pad-rotate-translate-crop (rebuilt from TF ops in the tests) and plain `model.predict`:
    identical per-example results on 500 real test images.
    """
    images, labels, _ = data.read_image_folder(cifar10_dir, "test", per_class=50)
    images = images.astype(np.float32)
    params = transforms.grid()
    correct = np.ones(len(images), bool)
    for row in params:
        moved = reference_code_tf(images, np.tile(row, (len(images), 1)))
        correct &= model.predict(moved, batch_size=500, verbose=0).argmax(axis=1) == labels
    result = evaluation.grid_accuracy(model, images, labels, resampling="reference")
    np.testing.assert_array_equal(result.correct, correct)
    assert 0 < correct.mean() < 1
    composed = evaluation.grid_accuracy(model, images, labels, resampling="composed")
    assert result.evaluations != composed.evaluations or np.any(result.margin != composed.margin)
