"""The command-line trainers: every config trains, bad flags fail fast, evaluate and export work end to end."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from absl import flags
from helpers import REPO_ROOT, run_cli
from PIL import Image

from invariance_tf import (
    builders,
    callbacks,
    data,
    evaluation,
    experiment,
    experiment_config,
    networks,
    precision,
    report,
    run_data,
    semimetrics,
    tuning,
)
from invariance_tf import flags as experiment_flags
from invariance_tf.evaluation import final_metrics
from invariance_tf.evaluation.options import EvaluateOptions

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.cfg"))


def parse_flagfile(path: Path, *overrides: str) -> experiment_config.ExperimentConfig:
    """The config `trainers.fit --flagfile=path overrides...` would run."""
    values = flags.FlagValues()
    experiment_flags.define_experiment_flags(values)
    values(["fit", f"--flagfile={path}", *overrides])
    return experiment_flags.config_from_flags(values)


@pytest.fixture(scope="session")
def synthetic_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny ImageFolder copies of the datasets missing here (cifar100, svhn_cropped), real-layout names."""
    roots = {}
    rng = np.random.default_rng(0)
    for name in ("cifar100", "svhn_cropped"):
        root = tmp_path_factory.mktemp(name)
        for split in ("train", "test"):
            for class_name in data.dataset_info(name).class_names:
                folder = root / split / class_name
                folder.mkdir(parents=True)
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / "0.png")
        roots[name] = root
    return roots


def test_there_is_a_config_per_paper_row_and_dataset():
    names = {path.stem for path in CONFIGS}
    rows = ("std", "da", "da_kl", "at", "at_kl", "at_l2", "grn")
    assert {f"{d}_{r}" for d in ("cifar10", "cifar100", "svhn") for r in rows} | {"quickstart"} <= names


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "svhn"])
def test_l2_rows_weigh_the_penalty_as_the_reference_code(dataset):
    """The reference code's A.T.+L2 penalty (l2_mix_wo_10.json, lambda_ = 1) is mean ||a - b||^2 / 4."""
    config = parse_flagfile(REPO_ROOT / "configs" / f"{dataset}_at_l2.cfg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 64, 10)).astype(np.float32)
    reference = 1.0 * np.mean(np.sum((a - b) ** 2, axis=1)) / 4
    ours = config.lambda_reg * float(np.mean(semimetrics.get(config.h)(a, b)))
    np.testing.assert_allclose(ours, reference, rtol=1e-6)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "svhn"])
def test_the_std_row_trains_on_random_4_px_shifts_and_is_graded_on_the_papers_grid(dataset):
    """The reference's std.json: a continuous +-4 px shift per image, CE on it; the grid stays +-3 px, +-30 deg."""
    config = parse_flagfile(REPO_ROOT / "configs" / f"{dataset}_std.cfg")
    adversary = builders.build_adversary(config)
    assert adversary.limits == (4.0, 4.0, 0.0) and adversary.resampling == "reference"
    assert config.limits == (3.0, 3.0, 30.0) and config.ce_on == "rob"
    assert builders.build_adversary(parse_flagfile(REPO_ROOT / "configs" / f"{dataset}_da.cfg")).limits == (
        3.0,
        3.0,
        30.0,
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_trains_one_short_step(path, cifar10_dir, synthetic_roots, cifar10_train_slice):
    config = dataclasses.replace(
        parse_flagfile(path),
        data_dir=str(
            synthetic_roots.get(
                path.stem.split("_")[0] + ("_cropped" if path.stem.startswith("svhn") else ""), cifar10_dir
            )
        ),
    )
    config.validate()
    info = data.dataset_info(config.dataset)
    model = builders.build_model(config, info, steps_per_epoch=1)
    images, labels = cifar10_train_slice
    logs = model.train_on_batch(images[:8].astype(np.float32), labels[:8] % info.num_classes, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--lambda_reg=-1", "--lambda_reg=-1.0 is invalid: must be >= 0"),
        ("--h=js", "--h=js is invalid: valid semimetrics are ['kl', 'l2']"),
        ("--limits=3,-1,30", "--limits=3,-1,30 is invalid: must be 3 values >= 0"),
        ("--adversary_limits=4,4", "--adversary_limits=4,4 is invalid: must be empty (= --limits) or 3 values"),
        ("--resampling=nearest", "--resampling=nearest is invalid: valid resamplings are ['composed', 'reference']"),
        ("--reference_half_batch_ce", "--reference_half_batch_ce needs --ce_on=rob"),
        ("--data_dir=/nonexistent/cifar10", "/nonexistent/cifar10"),
    ],
)
def test_bad_flags_exit_with_one_clear_line(flag, message, tmp_path):
    result = run_cli(
        "trainers.fit",
        f"--flagfile={REPO_ROOT / 'configs' / 'cifar10_small.cfg'}",
        f"--output_dir={tmp_path}",
        flag,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr[-2000:]
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    "flag,choices",
    [
        ("--adversary=fgsm", "none|random|spgd|worst_of_k"),
        ("--dataset=mnist", "cifar10|cifar100|svhn_cropped"),
        ("--augment=crop", "auto|on|flip|off"),
    ],
)
def test_an_enum_flag_outside_its_choices_is_refused_while_parsing(flag, choices):
    values = flags.FlagValues()
    experiment_flags.define_experiment_flags(values)
    with pytest.raises(
        flags.IllegalFlagValueError, match=rf"^flag {re.escape(flag)}: value should be one of <{choices}>$"
    ):
        values(["fit", flag])


def test_a_config_outside_its_choices_names_the_field_and_its_choices():
    config = experiment_config.ExperimentConfig(adversary="fgsm")
    with pytest.raises(ValueError, match=r"^--adversary=fgsm is invalid: valid values are \['none', 'random', 'spgd'"):
        config.validate()


@pytest.mark.parametrize("field", ["resnet_n", "epochs", "eval_k"])
@pytest.mark.parametrize("value", [0, 1.5, 2.0])
def test_a_count_field_takes_whole_numbers_only(field, value):
    config = experiment_config.ExperimentConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"^--{field}={value} is invalid: must be >= 1$"):
        config.validate()


def test_zero_means_auto_or_all_resolved_once():
    auto = experiment_config.ExperimentConfig()
    assert (auto.data_root, auto.train_subset_size, auto.test_subset_size) == (None, None, None)
    assert auto.evaluation_batch_size == evaluation.default_batch_size()
    assert auto.training_limits == auto.limits and auto.adversary_name is None
    given = experiment_config.ExperimentConfig(
        data_dir="cifar10",
        train_examples=100,
        validation_examples=20,
        test_examples=50,
        eval_batch_size=64,
        adversary="random",
        adversary_limits=(4.0, 4.0, 0.0),
    )
    assert (given.data_root, given.train_subset_size, given.test_subset_size) == ("cifar10", 120, 50)
    assert given.evaluation_batch_size == 64
    assert given.training_limits == (4.0, 4.0, 0.0) and given.adversary_name == "random"


def test_an_adversary_nothing_uses_is_refused():
    config = experiment_config.ExperimentConfig(adversary="worst_of_k", ce_on="nat", lambda_reg=0.0)
    with pytest.raises(ValueError, match=r"^--adversary=worst_of_k is never used with --ce_on=nat --lambda_reg=0: "):
        config.validate()


def test_command_line_keeps_paths_with_spaces_whole(tmp_path):
    config = experiment_config.ExperimentConfig(data_dir=str(tmp_path / "my data"), output_dir=str(tmp_path / "run 1"))
    python, option, module, *args = shlex.split(experiment_flags.command_line(config))
    assert (python, option, module) == ("python", "-m", "trainers.fit")
    values = flags.FlagValues()
    experiment_flags.define_experiment_flags(values)
    values(["fit", *args])
    assert experiment_flags.config_from_flags(values) == config


@pytest.mark.parametrize(
    "options_type, args, expected",
    [
        (
            tuning.SearchOptions,
            ["--h_choices=l2", "--lambda_max=5", "--noinclude_zero", "--tuner=random"],
            tuning.SearchOptions(h_choices=("l2",), lambda_max=5.0, include_zero=False, tuner="random"),
        ),
        (
            EvaluateOptions,
            [
                "--model=m.onnx",
                "--attack=clean,grid",
                "--mean=0.5",
                "--std=0.25,0.5,1",
                "--resampling=reference",
                "--plot",
            ],
            EvaluateOptions(model="m.onnx", mean=(0.5,), std=(0.25, 0.5, 1.0), resampling="reference", plot=True),
        ),
    ],
)
def test_options_dataclasses_generate_their_flags(options_type, args, expected):
    """Defaults, help and types come from the fields: tuples, Optional and enum-like (choices) fields."""
    values = flags.FlagValues()
    experiment_flags.define_flags(options_type, values)
    values(["cli"])
    assert experiment_flags.from_flags(options_type, values) == options_type()
    assert all(values[field.name].help.endswith(field.metadata["help"]) for field in dataclasses.fields(options_type))
    values(["cli", *args])
    assert experiment_flags.from_flags(options_type, values) == expected


def test_enum_like_options_list_and_check_their_choices():
    values = flags.FlagValues()
    experiment_flags.define_flags(EvaluateOptions, values)
    assert values["input_range"].help == "<0-255|0-1>: pixel scale the model expects"
    with pytest.raises(flags.IllegalFlagValueError, match="value should be one of <0-255|0-1>"):
        values(["evaluate", "--input_range=0-9"])
    with pytest.raises(ValueError, match=r"^--input_range=0-9 is invalid: valid values are \['0-255', '0-1'\]$"):
        EvaluateOptions(model=str(REPO_ROOT), input_range="0-9").validate()
    EvaluateOptions(model=str(REPO_ROOT), resampling="composed").validate()


def test_missing_tfds_copy_says_how_to_point_at_local_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    result = run_cli(
        "trainers.fit",
        f"--flagfile={REPO_ROOT / 'configs' / 'cifar10_small.cfg'}",
        f"--output_dir={tmp_path / 'run'}",
        timeout=120,
    )
    assert result.returncode != 0
    assert "--data_dir=" in result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cifar10_dir) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    result = run_cli(
        "trainers.fit",
        f"--flagfile={REPO_ROOT / 'configs' / 'cifar10_small.cfg'}",
        f"--data_dir={cifar10_dir}",
        f"--output_dir={out}",
        "--train_examples=256",
        "--epochs=2",
        "--test_examples=50",
        "--grid_examples=20",
        "--verbose=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def rerun_precision(run: Path) -> str:
    """The `--precision` a run was started with."""
    return json.loads((run / "config.json").read_text())["precision"]


def test_fit_writes_the_output_directory(trained_run):
    for name in ("model.keras", "metrics.json", "config.json", "flags.cfg", "checkpoints/last.keras"):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "logs").rglob("events.out.tfevents.*"))
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"clean_accuracy", "worst_of_10_accuracy", "grid_accuracy", "train_seconds"} <= set(metrics)
    assert metrics["parameters"] > 0 and metrics["macs_per_image"] > 0
    assert metrics["grid_accuracy"] <= metrics["clean_accuracy"]
    assert (metrics["precision"], metrics["precision_reason"]) == tuple(precision.resolve(rerun_precision(trained_run)))
    rerun = parse_flagfile(trained_run / "flags.cfg")
    assert rerun == experiment_config.ExperimentConfig.from_json(json.loads((trained_run / "config.json").read_text()))


def test_evaluate_writes_json_and_table(trained_run):
    result = run_cli(
        "trainers.evaluate", f"--model_dir={trained_run}", "--attack=clean,worst_of_k,grid,spgd", "--examples=20"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((trained_run / "evaluation.json").read_text())
    assert {"clean", "worst_of_k", "grid", "spgd"} <= set(report)
    assert report["grid"]["accuracy"] <= report["clean"]["accuracy"]
    assert "grid" in result.stdout and "accuracy" in result.stdout
    assert report["grid"]["resampling"] == report["spgd"]["resampling"] == "reference"
    again = run_cli(
        "trainers.evaluate", f"--model_dir={trained_run}", "--attack=grid", "--examples=20", "--resampling=composed"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((trained_run / "evaluation.json").read_text())["grid"]["resampling"] == "composed"


def test_export_serves_the_same_logits_in_a_fresh_process(trained_run, tmp_path, cifar10_test_slice):
    export_dir = tmp_path / "export"
    result = run_cli("trainers.export", f"--model_dir={trained_run}", f"--export_dir={export_dir}", "--version=3")
    assert result.returncode == 0, result.stderr[-3000:]
    images = cifar10_test_slice[0][:8].astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "served = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "out = served(images=tf.constant(np.load(sys.argv[2])))\n"
        "np.save(sys.argv[3], out['logits'].numpy())\n"
        "assert np.allclose(out['probabilities'].numpy().sum(1), 1, atol=1e-5)\n"
        "try:\n"
        "    served(images=tf.zeros([1, 28, 28, 3]))\n"
        "except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:\n"
        "    print('SHAPE_ERROR', 'images must be float32 [batch, 32, 32, 3] raw pixel values (0-255)' in str(error))\n"
    )
    served = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(export_dir / "3"),
            str(tmp_path / "images.npy"),
            str(tmp_path / "logits.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    assert "SHAPE_ERROR True" in served.stdout
    model = keras.models.load_model(trained_run / "model.keras")
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), model.predict(images, verbose=0), atol=1e-5)
    listing = subprocess.run(
        ["saved_model_cli", "show", "--dir", str(export_dir / "3"), "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "serving_default" in listing.stdout and "probabilities" in listing.stdout


def test_robust_validation_callback_logs_worst_of_k_to_history_and_tensorboard(cifar10_dir, tmp_path):
    config = experiment_config.ExperimentConfig(
        dataset="cifar10",
        data_dir=str(cifar10_dir),
        network="small_cnn",
        adversary="random",
        ce_on="rob",
        epochs=2,
        batch_size=32,
        train_examples=64,
        validation_examples=40,
        eval_every=1,
        eval_k=3,
        test_examples=10,
        output_dir=str(tmp_path / "run"),
        verbose=0,
    )
    history = keras.callbacks.History()
    experiment.run(config, extra_callbacks=[history])
    values = history.history["val_worst_of_3_accuracy"]
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert "val_acc_nat" in history.history
    assert any((tmp_path / "run" / "logs" / "validation").glob("events.out.tfevents.*"))


def test_validation_callbacks_report_what_the_attacks_report(cifar10_test_slice):
    images, labels = cifar10_test_slice[0][:30], cifar10_test_slice[1][:30]
    model = networks.build("small_cnn")
    worst = callbacks.RobustValidation(images, labels, k=3, seed=4, batch_size=64, resampling="reference")
    grid = callbacks.GridValidation(images, labels, limits=(1, 1, 5), batch_size=64, resampling="reference")
    logs = {}
    for callback in (worst, grid):
        callback.set_model(model)
        callback.set_params({"epochs": 1})
        callback.on_epoch_end(0, logs)
    direct = evaluation.worst_of_k_accuracy(
        model, images, labels, k=3, seed=(4, 0), batch_size=64, resampling="reference"
    )
    assert logs["val_worst_of_3_accuracy"] == direct.accuracy
    brute = evaluation.grid_accuracy(model, images, labels, "brute", limits=(1, 1, 5), resampling="reference")
    assert logs["val_grid_accuracy"] == brute.accuracy


def test_importing_the_package_registers_every_serializable_class():
    """`import invariance_tf` alone registers every class `.keras` files name, like 'invariance_tf>OneCycle'.

    trainers.export once failed to load a one-cycle run.
    """
    import importlib
    import pkgutil

    import invariance_tf

    for module in pkgutil.walk_packages(invariance_tf.__path__, "invariance_tf."):
        importlib.import_module(module.name)
    ours = sorted(name for name in keras.saving.get_custom_objects() if name.startswith("invariance_tf>"))
    assert "invariance_tf>OneCycle" in ours and "invariance_tf>InvarianceModel" in ours
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            "import keras, invariance_tf; print(sorted(n for n in keras.saving.get_custom_objects()"
            " if n.startswith('invariance_tf>')))",
        ],
        capture_output=True,
        text=True,
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.strip().splitlines()[-1] == str(ours)


def test_fit_records_which_test_images_it_graded(trained_run, cifar10_dir):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    labels = data.load("cifar10", cifar10_dir, "test")[1]
    tested = data.subset_indices(labels, 50, 0)
    assert metrics["test_images"] == report.image_set(tested, len(labels))
    grid = tested[data.at_most(labels[tested], 20, 0)]
    assert metrics["grid_images"] == report.image_set(grid, len(labels))
    assert metrics["grid_examples"] == len(metrics["grid_correct"]) == 20
    assert metrics["eval_resampling"] == "reference"


def tiny_classifier() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


def test_the_grid_grades_the_named_images_and_the_regime_grades_training_images(cifar10_test_slice, tmp_path):
    images, labels = cifar10_test_slice
    positions = np.arange(len(labels)) * 3 + 1  # as if a subset of a 300-image split
    named = positions[[2, 5, 11, 40, 77]]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(report.image_set(named, 300)))
    config = experiment_config.ExperimentConfig(grid_subset=str(subset), train_eval_examples=30, eval_batch_size=64)
    model = tiny_classifier()
    grid = run_data.grid_choice(labels, positions, config)
    metrics = final_metrics.robust_metrics(model, images, labels, config, grid, positions=positions, split_size=300)
    np.testing.assert_array_equal(report.image_positions(metrics["grid_images"]), named)
    chosen = [2, 5, 11, 40, 77]
    brute = evaluation.grid_accuracy(model, images[chosen], labels[chosen], method="brute", resampling="reference")
    assert metrics["grid_correct"] == report.bits(brute.correct)
    regime = final_metrics.training_regime(model, images, labels, config)
    kept = data.at_most(labels, 30, 0)
    clean = np.mean(model.predict(images[kept].astype(np.float32), verbose=0).argmax(-1) == labels[kept])
    assert regime["train_eval_examples"] == 30 and regime["train_clean_accuracy"] == pytest.approx(clean)
    assert regime["train_worst_of_10_accuracy"] <= regime["train_clean_accuracy"]
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(report.image_set(np.array([0]), 300)))
    with pytest.raises(ValueError, match="names 1 test images outside the run's"):
        run_data.grid_choice(labels, positions, dataclasses.replace(config, grid_subset=str(outside)))
