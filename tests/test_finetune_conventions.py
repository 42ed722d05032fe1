"""Fine-tuning a classifier as its owner wrote it: its input convention, its own augmentation layers.

`trainers.fit --init_model M --input_range/--mean/--std` trains M behind an `InputConvention` (the
transformations act on raw pixels, M sees what it expects), saves it in M's convention and records that
convention, which `trainers.evaluate --model RUN_DIR` and `trainers.export` read. A model returning probabilities,
an ONNX file and convention flags without --init_model are refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import run_cli

from invariance_tf import data, evaluation, export, report
from invariance_tf.layers.input_convention import InputConvention
from invariance_tf.networks import pretrained

CIFAR10 = data.dataset_info("cifar10")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
CONVENTIONS = {
    "0-1": ["--input_range=0-1"],
    "mean/std": ["--input_range=0-1", f"--mean={','.join(map(str, MEAN))}", f"--std={','.join(map(str, STD))}"],
}
DA_KL = ["--adversary=random", "--ce_on=mix", "--h=kl", "--lambda_reg=1", "--lr=0.01", "--augment=off"]


def owner_cnn(seed: int = 0) -> keras.Model:
    """A CNN as a Keras tutorial writes it: its own augmentation layers, then convolutions, logits out.

    It expects whatever input it is trained on; nothing in it knows the project's raw-pixel convention.
    """
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
            keras.layers.RandomRotation(0.05, fill_mode="constant"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ],
        name="owner_cnn",
    )


def owner_input(images: np.ndarray, convention: str) -> np.ndarray:
    """What the owner feeds its model, computed by hand: pixels / 255, then normalised for "mean/std"."""
    scaled = images.astype(np.float32) / 255.0
    return (scaled - np.float32(MEAN)) / np.float32(STD) if convention == "mean/std" else scaled


def convention_of(name: str) -> InputConvention:
    return InputConvention("0-1", *((MEAN, STD) if name == "mean/std" else ()))


def fit(data_dir: Path, out: Path, init_model: Path, *extra: str, timeout: int = 900):
    return run_cli(
        "trainers.fit",
        f"--data_dir={data_dir}",
        f"--output_dir={out}",
        f"--init_model={init_model}",
        "--verbose=0",
        *extra,
        timeout=timeout,
    )


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_the_wrapped_network_feeds_the_owners_model_what_it_expects(convention, tmp_path, cifar10_test_slice):
    owner = owner_cnn()
    owner.save(tmp_path / "owner.keras")
    network = pretrained.trainable_network(
        tmp_path / "owner.keras", CIFAR10.image_shape, 10, "float32", convention_of(convention)
    )
    images = cifar10_test_slice[0][:8].astype(np.float32)
    np.testing.assert_allclose(
        network(images, training=False), owner(owner_input(images, convention), training=False), atol=1e-5
    )
    assert pretrained.owner_network(network).name == "owner_cnn"
    classifier = evaluation.load_classifier(tmp_path / "owner.keras", *convention_of(convention).settings().values())
    np.testing.assert_allclose(classifier(images), network(images, training=False), atol=1e-5)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, cifar10_dir) -> dict[str, Path]:
    """The owner's CNN (untrained: the mechanics only) and its run fine-tuned for one epoch of D.A.+KL in [0, 1]."""
    root = tmp_path_factory.mktemp("fine_tuned")
    owner_cnn().save(root / "owner.keras")
    tiny = ["--train_examples=256", "--batch_size=64", "--epochs=1", "--test_examples=32", "--grid_examples=8"]
    result = fit(cifar10_dir, root / "run", root / "owner.keras", *DA_KL, *tiny, *CONVENTIONS["0-1"])
    assert result.returncode == 0, result.stderr[-3000:]
    return {"owner": root / "owner.keras", "run": root / "run"}


def test_the_fine_tuned_model_is_saved_in_the_owners_convention(fine_tuned, cifar10_dir):
    run = fine_tuned["run"]
    saved = keras.models.load_model(run / "model.keras")
    assert saved.name == "owner_cnn" and saved.input_shape == (None, 32, 32, 3)
    before = keras.models.load_model(fine_tuned["owner"]).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, saved.get_weights())), "no weight changed"
    assert json.loads((run / "config.json").read_text())["input_range"] == "0-1"
    metrics = json.loads((run / "metrics.json").read_text())
    images, labels, _ = data.load("cifar10", cifar10_dir, "test")
    chosen = report.image_positions(metrics["test_images"])
    predicted = saved.predict(owner_input(images[chosen], "0-1"), verbose=0).argmax(-1)
    assert abs(np.mean(predicted == labels[chosen]) - metrics["clean_accuracy"]) <= 1 / len(chosen)


def test_evaluate_and_export_read_the_runs_convention(fine_tuned, cifar10_test_slice, tmp_path, capsys):
    run = fine_tuned["run"]
    images = cifar10_test_slice[0][:8].astype(np.float32)
    saved = keras.models.load_model(run / "model.keras")
    expected = saved(owner_input(images, "0-1"), training=False)
    np.testing.assert_allclose(evaluation.load_classifier(run)(images), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"^--model=.* records the input convention .*'0-1'.* drop --input_range"):
        evaluation.load_classifier(run, "0-255", mean=[120.0])
    result = run_cli("trainers.export", f"--model_dir={run}", f"--export_dir={tmp_path / 'export'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(input: pixel values in [0, 1])" in result.stdout
    served = evaluation.load_classifier(tmp_path / "export" / "1", "0-1")
    assert capsys.readouterr().err.count("is a SavedModel, a TensorFlow program") == 1
    np.testing.assert_allclose(served(images), expected, atol=1e-5)
    result = run_cli(
        "trainers.evaluate", f"--model={run}", "--attack=clean", "--examples=20", f"--output_dir={tmp_path / 'eval'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_model_returning_probabilities_is_refused_in_one_line(cifar10_dir, tmp_path):
    softmax = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    softmax.save(tmp_path / "softmax.keras")
    result = fit(cifar10_dir, tmp_path / "run", tmp_path / "softmax.keras", "--input_range=0-1", timeout=120)
    assert result.returncode != 0
    assert last_line(result) == (
        f"error: --init_model={tmp_path / 'softmax.keras'} returns probabilities (on 4 random images every output "
        "row is >= 0 and sums to 1), but fine-tuning needs logits (h=KL and the cross-entropy apply the softmax "
        "themselves): remove its final softmax and save it again"
    )


def test_an_onnx_model_is_refused_in_one_line_that_says_what_to_do(cifar10_dir, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not read")
    result = fit(cifar10_dir, tmp_path / "run", path, timeout=120)
    assert result.returncode != 0
    assert last_line(result) == f"error: --init_model={path} {pretrained.ONNX_NOT_TRAINABLE}"
    assert "trainers.evaluate --model" in last_line(result) and "re-create the network in Keras" in last_line(result)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mean=0.5"], "--mean=0.5 is invalid: describes the input of an --init_model"),
        (["--input_range=0-1", "--std=0"], "--std=0 is invalid: 0 is not a number > 0"),
    ],
)
def test_convention_flags_are_checked_before_training(flags, message, cifar10_dir, tmp_path):
    init = [f"--init_model={tmp_path}"] if "--std=0" in flags else []
    result = run_cli("trainers.fit", f"--data_dir={cifar10_dir}", f"--output_dir={tmp_path / 'run'}", *init, *flags)
    assert result.returncode != 0
    assert last_line(result).startswith(f"error: {message}")


def test_the_exported_signature_names_the_owners_convention(tmp_path):
    owner = owner_cnn()
    path = export.export_for_serving(owner, tmp_path / "export", convention=convention_of("mean/std"))
    loaded = evaluation.load_classifier(path, "0-1", MEAN, STD)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(images), owner(owner_input(images, "mean/std"), training=False), atol=1e-4)


def evaluate(data_dir: Path, out: Path, *flags: str) -> dict:
    """trainers.evaluate's clean and grid accuracy on the same 1,000 test images (the paper's grid protocol)."""
    result = run_cli(
        "trainers.evaluate",
        *flags,
        f"--data_dir={data_dir}",
        "--attack=clean,grid",
        "--examples=1000",
        f"--output_dir={out}",
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "evaluation.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_fine_tuning_a_trained_owner_model_keeps_its_clean_accuracy_and_gains_grid_accuracy(
    convention, cifar10_dir, tmp_path
):
    """The owner's CNN, trained in its convention, fine-tuned for 2 epochs of D.A.+KL; graded before and after.

    The owner trains it for 15 epochs on 10,000 CIFAR-10 images (its augmentation layers active); fine-tuning uses
    the same images; both models are graded on the same 1,000 test images.
    """
    images, labels, _ = data.load("cifar10", cifar10_dir, "train", examples=10000, seed=0)
    owner = owner_cnn()
    owner.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    owner.fit(owner_input(images, convention), labels, batch_size=64, epochs=15, verbose=0)
    owner.save(tmp_path / "owner.keras")
    run = tmp_path / "run"
    tuning = ["--train_examples=10000", "--batch_size=64", "--epochs=2", "--test_examples=100", "--grid_examples=10"]
    result = fit(cifar10_dir, run, tmp_path / "owner.keras", *DA_KL, *tuning, *CONVENTIONS[convention], timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    before = evaluate(cifar10_dir, tmp_path / "before", f"--model={tmp_path / 'owner.keras'}", *CONVENTIONS[convention])
    after = evaluate(cifar10_dir, tmp_path / "after", f"--model={run}")
    numbers = {
        "convention": convention,
        "before": {name: before[name]["accuracy"] for name in ("clean", "grid")},
        "after": {name: after[name]["accuracy"] for name in ("clean", "grid")},
        "fine_tuning_seconds": json.loads((run / "metrics.json").read_text())["train_seconds"],
    }
    print(json.dumps(numbers))
    assert after["clean"]["accuracy"] >= before["clean"]["accuracy"] - 0.05, numbers
    assert after["grid"]["accuracy"] > before["grid"]["accuracy"], numbers
    saved = keras.models.load_model(run / "model.keras")
    test_images, test_labels, _ = data.load("cifar10", cifar10_dir, "test", examples=1000, seed=0)
    predicted = saved.predict(owner_input(test_images, convention), verbose=0).argmax(-1)
    assert abs(np.mean(predicted == test_labels) - after["clean"]["accuracy"]) <= 0.01, "model.keras takes [0, 1]"
