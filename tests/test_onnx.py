"""trainers.evaluate on ONNX models (NHWC and NCHW, run by onnxruntime) and the --mean / --std normalisation."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import helpers
import keras
import numpy as np
import pytest
import tensorflow as tf

from invariance_tf import data, evaluation, model_files

MILD = {"limits": (1.0, 1.0, 5.0), "granularity": (3, 3, 5)}
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
pytestmark = pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")  # Keras' tf2onnx patch


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """trainers.evaluate, the one command-line tool of this file."""
    return helpers.run_cli("trainers.evaluate", *args, timeout=300)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def export_onnx(model: keras.Model, path: Path, sample: np.ndarray) -> Path:
    """`model` as an ONNX file (Keras' own exporter, tf2onnx underneath), after one call on `sample`."""
    model(sample)
    model.export(str(path), format="onnx", verbose=False)
    return path


@pytest.fixture(scope="module")
def trained(cifar10_train_slice) -> keras.Model:
    """small_cnn trained for a few seconds on raw 0-255 pixels with random transformations."""
    return helpers.train_small_cnn(*cifar10_train_slice, copies=1, epochs=3, seed=2)


@pytest.fixture(scope="module")
def models(trained, tmp_path_factory) -> dict[str, Path]:
    """The trained model as model.keras, nhwc.onnx and nchw.onnx (a leading Permute takes [N, 3, 32, 32])."""
    folder = tmp_path_factory.mktemp("onnx")
    sample = np.zeros((1, 32, 32, 3), np.float32)
    trained.save(folder / "model.keras")
    nchw = keras.Sequential([keras.Input((3, 32, 32)), keras.layers.Permute((2, 3, 1)), trained])
    return {
        "keras": folder / "model.keras",
        "nhwc": export_onnx(trained, folder / "nhwc.onnx", sample),
        "nchw": export_onnx(nchw, folder / "nchw.onnx", sample.transpose(0, 3, 1, 2)),
    }


def test_onnx_nhwc_and_nchw_give_the_keras_models_grid_results_on_500_test_images(models, cifar10_dir):
    """Per example the same correct flag, worst transformation and (to float rounding) margin; about 20 s."""
    images, labels, _ = data.load("cifar10", cifar10_dir, "test", examples=500, seed=0)
    keras_result = evaluation.grid_accuracy(evaluation.load_classifier(models["keras"]), images, labels)
    assert 0 < keras_result.accuracy < 1
    for layout in ("nhwc", "nchw"):
        classifier = evaluation.load_classifier(models[layout], image_shape=images.shape[1:])
        assert classifier.layout == layout
        result = evaluation.grid_accuracy(classifier, images, labels)
        np.testing.assert_array_equal(result.correct, keras_result.correct, err_msg=layout)
        np.testing.assert_array_equal(result.worst_transform, keras_result.worst_transform, err_msg=layout)
        np.testing.assert_allclose(result.margin, keras_result.margin, rtol=1e-4, atol=1e-4, err_msg=layout)
        assert result.evaluations == keras_result.evaluations


@pytest.mark.parametrize(
    "declared, layout",
    [
        ([None, 32, 32, 3], "nhwc"),
        ([None, 3, 32, 32], "nchw"),
        ([None, None, None, 3], "nhwc"),
        ([None, 3, None, None], "nchw"),
        ([8, 32, 32, 3], "nhwc"),
    ],
)
def test_detect_layout_finds_the_channel_axis(declared, layout):
    assert model_files.detect_layout(declared, (32, 32, 3)) == layout


def test_detect_layout_refuses_ambiguity_and_misfits_with_one_line():
    with pytest.raises(
        ValueError,
        match=r"^cannot tell the layout of the model input \[None, None, None, None\]: "
        r".*give --input_layout=nhwc or --input_layout=nchw$",
    ):
        model_files.detect_layout([None, None, None, None], (32, 32, 3))
    with pytest.raises(
        ValueError,
        match=r"^model input must be \[batch, 32, 32, 3\] \(nhwc\) or \[batch, 3, 32, 32\] "
        r"\(nchw\) to fit the data; the model declares \[None, 3, 28, 28\]$",
    ):
        model_files.detect_layout([None, 3, 28, 28], (32, 32, 3))
    assert model_files.detect_layout([None, 1, 28, 28], (28, 28, 1)) == "nchw"


def test_onnx_model_of_the_wrong_size_is_refused(tmp_path, cifar10_test_slice):
    small = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = export_onnx(small, tmp_path / "small.onnx", np.zeros((1, 28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r"the model declares \[None, 28, 28, 3\]$"):
        evaluation.load_classifier(path, image_shape=(32, 32, 3))
    five = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    classifier = evaluation.load_classifier(
        export_onnx(five, tmp_path / "five.onnx", np.zeros((1, 32, 32, 3), np.float32)), image_shape=(32, 32, 3)
    )
    with pytest.raises(ValueError, match=r"model output must be float \[batch, 10\].*got float32 \[2, 5\]"):
        evaluation.check_classifier(classifier, cifar10_test_slice[0], num_classes=10)


def test_onnx_model_with_a_fixed_batch_of_one_runs_in_slices(trained, tmp_path, cifar10_test_slice):
    """What torch.onnx.export writes without dynamic axes; batches of 8 pairs go through in slices of 1."""
    path = tmp_path / "batch_of_one.onnx"
    trained.export(str(path), format="onnx", verbose=False, input_signature=[tf.TensorSpec((1, 32, 32, 3))])
    classifier = evaluation.load_classifier(path, image_shape=(32, 32, 3))
    assert classifier.input_shape == (1, 32, 32, 3)
    images, labels = cifar10_test_slice[0][:20], cifar10_test_slice[1][:20]
    result = evaluation.grid_accuracy(classifier, images, labels, batch_size=8, **MILD)
    expected = evaluation.grid_accuracy(trained, images, labels, batch_size=8, **MILD)
    np.testing.assert_allclose(result.margin, expected.margin, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(result.correct, expected.correct)


def test_unreadable_onnx_file_is_refused_with_one_line(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"^onnxruntime cannot read .*broken\.onnx: \[ONNXRuntimeError\][^\n]*$"):
        evaluation.load_classifier(tmp_path / "broken.onnx", image_shape=(32, 32, 3))


def test_cli_refuses_a_wrong_explicit_layout_with_one_line(models, cifar10_dir, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        f"--model={models['nhwc']}",
        "--input_layout=nchw",
        f"--data_dir={cifar10_dir}",
        "--examples=20",
        f"--output_dir={out}",
    )
    assert result.returncode != 0
    assert last_line(result) == (
        "error: model input must be [batch, 3, 32, 32] (nchw) to fit the data; the model declares [None, 32, 32, 3]"
    )
    assert not out.exists()


def test_cli_refuses_spgd_on_an_onnx_model_before_loading_data(models, tmp_path):
    result = run_cli(f"--model={models['nhwc']}", "--attack=clean,spgd,grid", f"--data_dir={tmp_path / 'none'}")
    assert result.returncode != 0
    assert last_line(result) == (
        f"error: --attack=clean,spgd,grid: gradient-based ['spgd'] cannot run on the ONNX "
        f"model --model={models['nhwc']} (onnxruntime gives no gradients); valid attacks "
        "for it are ['clean', 'worst_of_k', 'grid', 'report']"
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--std=0.2,0,0.2", "error: --std=0.2,0,0.2 is invalid: 0 is not a number > 0"),
        (
            "--mean=0.5,0.5",
            "error: --mean=0.5,0.5 is invalid: give 1 value or 3 (one per channel of the images); got 2",
        ),
    ],
)
def test_cli_refuses_bad_mean_and_std_with_one_line(models, cifar10_dir, flag, message, tmp_path):
    out = tmp_path / "report"
    result = run_cli(f"--model={models['keras']}", flag, f"--data_dir={cifar10_dir}", f"--output_dir={out}")
    assert result.returncode != 0
    assert last_line(result) == message
    assert not out.exists()


@pytest.fixture(scope="module")
def normalised(trained, tmp_path_factory) -> dict[str, Path]:
    """A model expecting (pixels / 255 - MEAN) / STD, as .keras and .onnx, and the same with it built in.

    The first is the trained model behind a per-channel Rescaling that undoes the normalisation; the second has
    the normalisation built in (Rescaling(1 / 255), then Normalization), taking raw pixels.
    """
    folder = tmp_path_factory.mktemp("normalised")
    sample = np.zeros((1, 32, 32, 3), np.float32)
    undo = keras.layers.Rescaling(scale=[255 * s for s in STD], offset=[255 * m for m in MEAN])
    expects_normalised = keras.Sequential([keras.Input((32, 32, 3)), undo, trained])
    built_in = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Normalization(mean=MEAN, variance=np.square(STD)),
            expects_normalised,
        ]
    )
    nchw = keras.Sequential([keras.Input((3, 32, 32)), keras.layers.Permute((2, 3, 1)), expects_normalised])
    expects_normalised.save(folder / "normalised.keras")
    built_in.save(folder / "built_in.keras")
    return {
        "keras": folder / "normalised.keras",
        "built_in": folder / "built_in.keras",
        "onnx": export_onnx(expects_normalised, folder / "normalised.onnx", sample),
        "onnx_nchw": export_onnx(nchw, folder / "normalised_nchw.onnx", sample.transpose(0, 3, 1, 2)),
    }


@pytest.mark.parametrize("kind", ["keras", "onnx"])
def test_mean_and_std_equal_a_model_with_the_normalisation_built_in(normalised, kind, cifar10_test_slice):
    """The black canvas of a shift is 0 in raw pixels (before normalisation) in both."""
    images, labels = cifar10_test_slice
    built_in = evaluation.grid_accuracy(evaluation.load_classifier(normalised["built_in"]), images, labels, **MILD)
    flagged = evaluation.grid_accuracy(
        evaluation.load_classifier(normalised[kind], "0-1", MEAN, STD, "auto", images.shape[1:]), images, labels, **MILD
    )
    unnormalised = evaluation.grid_accuracy(
        evaluation.load_classifier(normalised[kind], "0-1", image_shape=images.shape[1:]), images, labels, **MILD
    )
    assert 0 < built_in.accuracy < 1
    np.testing.assert_allclose(flagged.margin, built_in.margin, rtol=1e-4, atol=1e-4)
    clear = np.abs(built_in.margin) > 1e-3
    np.testing.assert_array_equal(flagged.correct[clear], built_in.correct[clear])
    assert np.abs(unnormalised.margin - built_in.margin).max() > 1.0


def test_cli_evaluates_a_normalised_nchw_onnx_model_like_the_keras_model_with_it_built_in(
    normalised, cifar10_dir, tmp_path
):
    out = tmp_path / "report"
    result = run_cli(
        f"--model={normalised['onnx_nchw']}",
        f"--data_dir={cifar10_dir}",
        "--examples=30",
        "--attack=clean,grid",
        "--input_range=0-1",
        f"--mean={','.join(map(str, MEAN))}",
        f"--std={','.join(map(str, STD))}",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "examples.csv") as file:
        rows = list(csv.DictReader(file))
    images, labels, _ = data.load("cifar10", cifar10_dir, "test", examples=30, seed=0)
    expected = evaluation.grid_accuracy(evaluation.load_classifier(normalised["built_in"]), images, labels)
    assert [int(row["label"]) for row in rows] == labels.tolist()
    assert [row["grid_correct"] == "1" for row in rows] == expected.correct.tolist()
    np.testing.assert_allclose([float(row["grid_margin"]) for row in rows], expected.margin, rtol=1e-4, atol=1e-4)


def test_fingerprint_keeps_keras_keys_and_follows_onnx_files_and_normalisation(models):
    keras_model = keras.models.load_model(models["keras"])
    assert evaluation.fingerprint(evaluation.load_classifier(models["keras"])) == evaluation.fingerprint(keras_model)
    keys = {
        evaluation.fingerprint(evaluation.load_classifier(models["keras"], mean=MEAN, std=STD)),
        evaluation.fingerprint(keras_model),
    }
    for path in (models["nhwc"], models["nchw"]):
        for mean, std in ((None, None), (MEAN, None), (MEAN, STD), ((0.5,), STD)):
            first, again = (
                evaluation.fingerprint(evaluation.load_classifier(path, mean=mean, std=std, image_shape=(32, 32, 3)))
                for _ in range(2)
            )
            assert first == again
            keys.add(first)
    assert len(keys) == 10
