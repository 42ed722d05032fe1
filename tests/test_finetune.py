"""Robust fine-tuning (`--init_model`) from each kind of trained classifier, and refusal of one that does not fit.

Each kind starts a run with its own weights, trains and resumes after a kill; a classifier that does not fit the
data is refused in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT, kill_after_first_backup, run_cli

from invariance_tf import builders, data, evaluation, experiment_config, export, model_files, networks
from invariance_tf.networks import pretrained
from invariance_tf.networks.resnet9 import resnet9
from invariance_tf.networks.small_cnn import small_cnn

DA_KL = REPO_ROOT / "configs" / "cifar10_small.cfg"
TINY = ["--train_examples=128", "--batch_size=64", "--test_examples=32", "--grid_examples=8", "--verbose=0"]
CIFAR10 = data.dataset_info("cifar10")
SHIPPED = REPO_ROOT / "models" / "cifar10_std_resnet9_w16.keras"


def fit(data_dir: Path, out: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_cli(
        "trainers.fit",
        f"--flagfile={DA_KL}",
        f"--data_dir={data_dir}",
        f"--output_dir={out}",
        *TINY,
        *extra,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory, cifar10_dir) -> dict[str, Path]:
    """One trained classifier as each kind of `--init_model`.

    A run folder, a plain .keras network and the SavedModel trainers.export writes.
    """
    root = tmp_path_factory.mktemp("sources")
    result = fit(cifar10_dir, root / "run", "--epochs=1", "--network=small_cnn")
    assert result.returncode == 0, result.stderr[-3000:]
    network = export.classifier_network(keras.models.load_model(root / "run" / "model.keras"))
    network.save(root / "network.keras")
    export.export_for_serving(network, root / "exported", version=1)
    return {"run folder": root / "run", ".keras file": root / "network.keras", "SavedModel": root / "exported" / "1"}


@pytest.mark.parametrize("kind", ["run folder", ".keras file", "SavedModel"])
def test_each_kind_of_init_model_starts_the_run_from_its_weights(sources, kind, cifar10_test_slice):
    images = cifar10_test_slice[0][:16].astype(np.float32)
    expected = keras.models.load_model(sources[".keras file"])(images)
    config = experiment_config.ExperimentConfig(init_model=str(sources[kind]), network="resnet")
    model = builders.build_model(config, CIFAR10, steps_per_epoch=1, policy="float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-4)
    assert model.network.trainable_weights


@pytest.mark.parametrize("kind", ["run folder", "SavedModel"])
def test_fine_tuning_trains_the_loaded_weights_and_its_run_evaluates(sources, kind, cifar10_dir, tmp_path):
    out = tmp_path / "fine_tuned"
    result = fit(cifar10_dir, out, "--epochs=1", f"--init_model={sources[kind]}", "--precision=float32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("is a SavedModel, a TensorFlow program") == (kind == "SavedModel"), "said once"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["grid_accuracy"] <= metrics["clean_accuracy"] <= 1
    before = keras.models.load_model(sources[".keras file"]).get_weights()
    after = export.classifier_network(model_files.load_keras(out / "model.keras")).get_weights()
    assert [w.shape for w in before] == [w.shape for w in after]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "fine-tuning changed no weight"
    classifier = evaluation.load_classifier(out / "model.keras")
    images = np.zeros((2, 32, 32, 3), np.float32)
    np.testing.assert_allclose(
        classifier(images), export.classifier_network(model_files.load_keras(out / "model.keras"))(images), atol=1e-5
    )


def test_a_keras_file_holding_a_saved_model_outside_a_fine_tuned_run_is_refused_in_one_line(sources, tmp_path):
    config = experiment_config.ExperimentConfig(init_model=str(sources["SavedModel"]))
    model = builders.build_model(config, CIFAR10, steps_per_epoch=1, policy="float32")
    model.save(tmp_path / "elsewhere.keras")
    with pytest.raises(
        ValueError, match=r"holds a keras.layers.TFSMLayer .* keras.config.enable_unsafe_deserialization"
    ):
        model_files.load_keras(tmp_path / "elsewhere.keras")


def test_a_loaded_network_computes_under_the_runs_policy_and_a_layer_pinned_to_float32_stays_pinned(
    tmp_path, cifar10_test_slice
):
    with networks.dtype_policy("mixed_bfloat16"):
        network = resnet9(width=4)
    network.save(tmp_path / "resnet9.keras")
    images = cifar10_test_slice[0][:8].astype(np.float32)
    as_saved = pretrained.trainable_network(tmp_path / "resnet9.keras", CIFAR10.image_shape, 10, "mixed_bfloat16")
    np.testing.assert_array_equal(as_saved(images), network(images))
    float32 = pretrained.trainable_network(tmp_path / "resnet9.keras", CIFAR10.image_shape, 10, "float32")
    assert {layer.dtype_policy.name for layer in float32.layers} == {"float32"}
    np.testing.assert_allclose(float32(images), network(images), rtol=0.05, atol=0.05)
    float16 = pretrained.trainable_network(tmp_path / "resnet9.keras", CIFAR10.image_shape, 10, "mixed_float16")
    policies = {layer.name: layer.dtype_policy.name for layer in float16.layers}
    assert policies.pop("logits") == "float32"
    assert set(policies.values()) - {"float32"} == {"mixed_float16"}
    pinned = [
        [layer.name for layer in model.layers[1:] if layer.dtype_policy.name == "float32"]
        for model in (network, float16)
    ]
    assert pinned[0] == pinned[1] == ["standardize", "logits"]


@pytest.mark.parametrize(
    "network, message",
    [
        (
            lambda: small_cnn(input_shape=(28, 28, 1)),
            "input must be [batch, 32, 32, 3] to fit the data; the model declares [None, 28, 28, 1]",
        ),
        (
            lambda: small_cnn(num_classes=100),
            "output must be float [batch, 10] (one score per class of the data); got float32 [4, 100] for a batch of 4",
        ),
    ],
)
def test_a_classifier_that_does_not_fit_the_data_is_refused_in_one_line_before_training(
    network, message, cifar10_dir, tmp_path
):
    path = tmp_path / "misfit.keras"
    network().save(path)
    result = fit(cifar10_dir, tmp_path / "run", f"--init_model={path}", timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: --init_model={path} {message}"
    assert not (tmp_path / "run" / "config.json").exists(), "refused after the run started"


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda root: root / "missing.keras", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "is none of the kinds it can be"),
    ],
)
def test_a_path_that_is_no_classifier_is_refused_by_the_config(make, reason, tmp_path):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=rf"^--init_model={path} {reason}: give a trainers.fit run folder"):
        experiment_config.ExperimentConfig(init_model=str(path)).validate()


def test_a_saved_model_under_a_mixed_policy_is_refused_in_one_line(sources):
    with pytest.raises(
        ValueError,
        match=r"is a SavedModel, which computes in its own dtype: pass "
        r"--precision=float32",
    ):
        pretrained.trainable_network(sources["SavedModel"], CIFAR10.image_shape, 10, "mixed_bfloat16")


@pytest.mark.slow
def test_a_killed_fine_tuning_resumes_from_its_backup_not_from_the_init_model(sources, cifar10_dir, tmp_path):
    out = tmp_path / "run"
    flags = ["--epochs=4", "--train_examples=640", "--deterministic", f"--init_model={sources['.keras file']}"]
    command = [
        sys.executable,
        "-m",
        "trainers.fit",
        f"--flagfile={DA_KL}",
        f"--data_dir={cifar10_dir}",
        f"--output_dir={out}",
        *TINY,
        *flags,
    ]
    done = kill_after_first_backup(command, out)
    assert 1 <= done < 4, "the run must be killed between its first backup and its end"
    result = fit(cifar10_dir, out, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["epochs_this_process"] == 4 - done
    reference = tmp_path / "uninterrupted"
    assert fit(cifar10_dir, reference, *flags).returncode == 0
    weights = [keras.models.load_model(path / "model.keras").get_weights() for path in (out, reference)]
    for resumed, uninterrupted in zip(*weights):
        np.testing.assert_array_equal(resumed, uninterrupted)


def test_the_shipped_std_classifier_is_accurate_on_real_test_images(cifar10_test_slice):
    images, labels = cifar10_test_slice
    network = pretrained.trainable_network(SHIPPED, CIFAR10.image_shape, 10, "float32")
    accuracy = float(np.mean(np.argmax(network.predict(images.astype(np.float32), verbose=0), -1) == labels))
    assert accuracy >= 0.7, f"models/{SHIPPED.name} classifies {accuracy:.0%} of 100 test images"


def test_the_readme_quickstart_fine_tunes_the_shipped_classifier(cifar10_dir, tmp_path):
    result = run_cli(
        "trainers.fit",
        f"--flagfile={REPO_ROOT / 'configs' / 'quickstart.cfg'}",
        f"--data_dir={cifar10_dir}",
        f"--output_dir={tmp_path / 'run'}",
        "--train_examples=256",
        "--epochs=1",
        "--lr=0.001",
        "--test_examples=50",
        "--grid_examples=10",
        "--verbose=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert Path(config["init_model"]).resolve() == SHIPPED
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["clean_accuracy"] >= 0.6


def test_the_finetune_benchmark_counts_pre_training_and_checks_the_target_on_quiet_machine_minutes():
    from benchmarks import finetune

    std = {"epoch_seconds": [60.0, 120.0], "clean_accuracy": 0.83, "grid_accuracy": 0.08}
    tuned = {"epoch_seconds": [300.0, 600.0], "clean_accuracy": 0.81, "grid_accuracy": 0.56}
    entry = finetune.row("at_l2_e2", "A.T.+L2 fine-tuned", 2, tuned, before=finetune.minutes(std))
    assert finetune.minutes(std) == (3.0, 2.0)
    assert (entry["train_minutes"], entry["total_minutes"], entry["fastest_total_minutes"]) == (15.0, 18.0, 12.0)
    assert finetune.meets_target(entry, 12.0) and not finetune.meets_target(entry, 11.9)
    assert not finetune.meets_target({**entry, "grid_accuracy": 0.549}, 60.0)
    assert finetune.BUDGET_MINUTES == 30


def test_the_finetune_table_reads_the_recipes_choice_and_the_scratch_runs_of_its_seed(tmp_path):
    from benchmarks import finetune

    def record(folder, run, seconds, clean, grid):
        (tmp_path / folder / run).mkdir(parents=True)
        metrics = {"epoch_seconds": seconds, "clean_accuracy": clean, "grid_accuracy": grid}
        (tmp_path / folder / run / "metrics.json").write_text(json.dumps(metrics))

    record("recipe", "std_seed0", [60.0, 120.0], 0.83, 0.08)
    record("recipe", "at_l2_e2_seed0", [300.0, 600.0], 0.81, 0.56)
    (tmp_path / "recipe" / "chosen_test.json").write_text(json.dumps({"chosen": "at_l2_e2"}))
    candidates = [{"name": "at_e3", "method": "A.T."}, {"name": "at_l2_e2", "method": "A.T.+L2"}]
    (tmp_path / "recipe" / "selection.json").write_text(json.dumps({"candidates": candidates}))
    record("scratch", "da_seed0", [30.0] * 4, 0.75, 0.35)
    record("scratch", "da_seed1", [30.0] * 4, 0.70, 0.30)
    [recipe] = finetune.recipe_rows(tmp_path / "recipe", 0)
    assert (recipe["run"], recipe["method"], recipe["epochs"]) == ("at_l2_e2 (recipe)", "A.T.+L2 fine-tuned", 2)
    assert (recipe["total_minutes"], recipe["fastest_total_minutes"]) == (18.0, 12.0)
    [scratch] = finetune.scratch_rows(tmp_path / "scratch", 0)
    assert (scratch["run"], scratch["grid_accuracy"], scratch["fastest_total_minutes"]) == (
        "da (from scratch)",
        0.35,
        2.0,
    )
    assert finetune.recipe_rows(tmp_path / "nothing", 0) == [] and finetune.scratch_rows(tmp_path / "nothing", 0) == []
