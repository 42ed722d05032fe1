"""trainers.evaluate on any classifier: .keras files and exported SavedModels, the report, resume after SIGKILL.

The report's rows are named by their images, and it includes the failure sheet.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, run_cli, train_small_cnn
from PIL import Image

from invariance_tf import data, evaluation, experiment_config, plots, report, transforms
from invariance_tf.evaluation import final_metrics, pairs

MILD = {"limits": (1.0, 1.0, 5.0), "granularity": (3, 3, 5)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cifar10_train_slice) -> Path:
    """A folder with model.keras: small_cnn trained for a few seconds with random transformations."""
    out = tmp_path_factory.mktemp("run")
    train_small_cnn(*cifar10_train_slice, copies=1, epochs=3, seed=2).save(out / "model.keras")
    return out


@pytest.fixture(scope="module")
def saved_model(run_dir, tmp_path_factory) -> Path:
    export_dir = tmp_path_factory.mktemp("export")
    result = run_cli("trainers.export", f"--model_dir={run_dir}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return export_dir / "1"


@pytest.fixture(scope="module")
def examples(cifar10_test_slice, cifar10_train_slice) -> tuple[np.ndarray, np.ndarray]:
    """40 test and 40 training images: the seen half gives grid survivors."""
    (test_x, test_y), (train_x, train_y) = cifar10_test_slice, cifar10_train_slice
    return (
        np.concatenate([test_x[::2][:40], train_x[::15]]).astype(np.float32),
        np.concatenate([test_y[::2][:40], train_y[::15]]),
    )


def test_saved_model_and_keras_file_give_identical_grid_results(run_dir, saved_model, examples):
    results = [
        evaluation.grid_accuracy(evaluation.load_classifier(path), *examples, keep_lowest=3)
        for path in (run_dir / "model.keras", saved_model)
    ]
    assert 0 < results[0].accuracy < 1
    for field in ("correct", "worst_transform", "lowest_transforms", "margin"):
        np.testing.assert_array_equal(getattr(results[0], field), getattr(results[1], field), err_msg=field)
    assert results[0].evaluations == results[1].evaluations


def test_input_range_rescales_for_a_model_expecting_0_to_1(examples, tmp_path):
    """A linear classifier on raw pixels, and the same one behind Rescaling(255) for inputs in [0, 1]."""
    keras.utils.set_random_seed(3)
    dense = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3))
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), dense]).save(tmp_path / "raw.keras")
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(255.0), keras.layers.Flatten(), dense]).save(
        tmp_path / "unit.keras"
    )
    raw = evaluation.grid_accuracy(evaluation.load_classifier(tmp_path / "raw.keras"), *examples, **MILD)
    unit = evaluation.grid_accuracy(evaluation.load_classifier(tmp_path / "unit.keras", "0-1"), *examples, **MILD)
    wrong = evaluation.grid_accuracy(evaluation.load_classifier(tmp_path / "unit.keras"), *examples, **MILD)
    np.testing.assert_allclose(unit.margin, raw.margin, rtol=1e-4, atol=1e-4)
    clear = np.abs(raw.margin) > 1e-3
    np.testing.assert_array_equal(unit.correct[clear], raw.correct[clear])
    np.testing.assert_allclose(wrong.margin, 255 * raw.margin, rtol=1e-3, atol=1e-2)


def test_cli_on_a_saved_model_writes_the_report(saved_model, cifar10_dir, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "trainers.evaluate",
        f"--model={saved_model}",
        f"--data_dir={cifar10_dir}",
        "--examples=30",
        "--attack=clean,grid,refined",
        "--plot",
        "--chunk_size=20",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["refined"]["accuracy"] <= summary["grid"]["accuracy"] <= summary["clean"]["accuracy"]
    assert summary["refined"]["grid_overestimate"] == pytest.approx(
        summary["grid"]["accuracy"] - summary["refined"]["accuracy"]
    )
    with open(out / "examples.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 30
    for name in ("grid", "refined"):
        survivors = sum(int(row[f"{name}_correct"]) for row in rows)
        assert summary[name]["accuracy"] == survivors / 30
        assert summary[name]["ci95"] == pytest.approx(list(report.wilson_interval(survivors, 30)))
    assert all(int(r["refined_correct"]) <= int(r["grid_correct"]) for r in rows)
    assert all(float(r["grid_margin"]) <= 0 for r in rows if r["grid_correct"] == "0")
    with open(out / "grid_per_angle.csv") as file:
        per_angle = list(csv.DictReader(file))
    assert [float(row["angle"]) for row in per_angle] == pytest.approx(np.linspace(-30, 30, 31))
    assert (out / "grid_per_shift.csv").is_file() and (out / "robustness_landscape.png").is_file()
    assert "overestimates robustness by" in result.stdout
    assert_rows_name_their_images(rows, cifar10_dir, evaluation.load_classifier(saved_model))
    failures = min(16, sum(row["grid_correct"] == "0" for row in rows))
    assert failures > 0 and "failures.png" in result.stdout
    with Image.open(out / "failures.png") as sheet:
        sheet.verify()
        assert sheet.format == "PNG"
    width, height = plots.FAILURE_TILE_INCHES
    with Image.open(out / "failures.png") as sheet:
        assert sheet.size == (round(4 * width * plots.DPI), round((-(-failures // 4) * height + 0.3) * plots.DPI))


def assert_rows_name_their_images(rows: list[dict], data_dir: Path, model) -> None:
    """The image column comes right after the example index and names, in each row, the file of that example.

    The file is in the test subset `data.load_names` picks, and Pillow's decode of it has the row's clean margin.
    """
    assert list(rows[0])[:3] == ["example", "image", "label"]
    names = [row["image"] for row in rows]
    assert names == data.load_names("cifar10", data_dir, "test", examples=len(rows), seed=0)
    class_names = data.dataset_info("cifar10").class_names
    assert all(row["image"].split("/")[:2] == ["test", class_names[int(row["label"])]] for row in rows)
    pillow = np.stack([np.asarray(Image.open(data_dir / name).convert("RGB")) for name in names])
    margin = evaluation.clean_result(model, pillow, np.array([int(row["label"]) for row in rows])).margin
    np.testing.assert_allclose(margin, [float(row["clean_margin"]) for row in rows], atol=0.05)


@pytest.fixture
def test_split_only(cifar10_dir, tmp_path) -> Path:
    """An ImageFolder root with 2 real images per class in test/ and no train/."""
    root = tmp_path / "test_only"
    for class_dir in sorted((cifar10_dir / "test").iterdir()):
        (root / "test" / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:2]:
            shutil.copy(image, root / "test" / class_dir.name / image.name)
    return root


def test_cli_evaluates_a_folder_with_only_a_test_split(run_dir, test_split_only, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "trainers.evaluate",
        f"--model={run_dir / 'model.keras'}",
        f"--data_dir={test_split_only}",
        "--attack=clean",
        "--examples=0",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "evaluation.json").read_text())["clean"]["examples"] == 20


def test_examples_csv_has_clean_columns_that_add_up_to_the_clean_accuracy(run_dir, cifar10_dir, tmp_path):
    out = tmp_path / "report"
    result = run_cli(
        "trainers.evaluate",
        f"--model={run_dir / 'model.keras'}",
        f"--data_dir={cifar10_dir}",
        "--examples=30",
        "--attack=clean,worst_of_k",
        "--k=2",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    clean = json.loads((out / "evaluation.json").read_text())["clean"]
    assert set(clean) == {"accuracy", "examples", "seconds", "ci95"}
    with open(out / "examples.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[3:8] == ["clean_correct", "clean_dx", "clean_dy", "clean_angle", "clean_margin"]
    assert np.mean([int(row["clean_correct"]) for row in rows]) == clean["accuracy"]
    assert 0 < clean["accuracy"] < 1
    assert all(float(row[f"clean_{axis}"]) == 0 for row in rows for axis in ("dx", "dy", "angle"))
    assert all((float(row["clean_margin"]) > 0) == (row["clean_correct"] == "1") for row in rows)


@pytest.mark.parametrize(
    "layers, message",
    [
        (
            [keras.Input((28, 28, 3)), keras.layers.Flatten(), keras.layers.Dense(10)],
            "error: model input must be [batch, 32, 32, 3] to fit the data; the model declares [None, 28, 28, 3]",
        ),
        (
            [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(5)],
            "error: model output must be float [batch, 10] (one score per class of the data); "
            "got float32 [2, 5] for a batch of 2",
        ),
    ],
)
def test_cli_refuses_a_model_that_does_not_fit_with_one_line(layers, message, cifar10_dir, tmp_path):
    keras.Sequential(layers).save(tmp_path / "bad.keras")
    result = run_cli(
        "trainers.evaluate", f"--model={tmp_path / 'bad.keras'}", f"--data_dir={cifar10_dir}", "--examples=20"
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == message
    assert not (tmp_path / "bad_evaluation").exists()


@pytest.mark.parametrize(
    "with_model, flag, message",
    [
        (False, "--examples=20", "error: give exactly one of --model_dir and --model"),
        (True, "--spgd_restarts=0", "error: --spgd_restarts=0 is invalid: must be >= 1"),
        (True, "--failures=0", "error: --failures=0 is invalid: must be >= 1"),
    ],
)
def test_cli_refuses_bad_flags_with_one_line(run_dir, with_model, flag, message):
    result = run_cli("trainers.evaluate", *([f"--model={run_dir / 'model.keras'}"] if with_model else []), flag)
    assert result.returncode != 0 and result.stderr.strip().splitlines()[-1] == message


@pytest.mark.slow
def test_killed_evaluation_resumes_from_saved_chunks(run_dir, cifar10_dir, tmp_path):
    """SIGKILL after the first saved chunk; the rerun reads the saved chunks and matches an uninterrupted run."""
    args = [
        f"--model={run_dir / 'model.keras'}",
        f"--data_dir={cifar10_dir}",
        "--examples=100",
        "--attack=grid,refined",
        "--grid_method=brute",
        "--chunk_size=10",
    ]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "trainers.evaluate", *args, f"--output_dir={killed}"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not list(killed.glob("evaluation_state/grid-*/chunk_000000.npz")):
        assert process.poll() is None and time.monotonic() < deadline, "no chunk was saved"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = len(list(killed.glob("evaluation_state/grid-*/chunk_*.npz")))
    assert 1 <= saved < 10 and not (killed / "evaluation.json").exists()
    resumed = run_cli("trainers.evaluate", *args, f"--output_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"grid: resumed {10 * saved} of 100 examples" in resumed.stdout
    assert json.loads((killed / "evaluation.json").read_text())["grid"]["resumed_examples"] == 10 * saved
    whole = tmp_path / "whole"
    uninterrupted = run_cli("trainers.evaluate", *args, f"--output_dir={whole}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    for name in ("examples.csv", "grid_per_angle.csv", "grid_per_shift.csv"):
        assert (killed / name).read_text() == (whole / name).read_text(), name


def shift_right(model, images, labels, pixels=1.0, batch_size=None, resampling="composed"):
    """A toy attack: correct iff correct `pixels` to the right."""
    images, labels, batch_size = pairs.check_inputs(images, labels, batch_size)
    moved = np.array([[pixels, 0.0, 0.0]], np.float32)
    evaluator = pairs.PairEvaluator(model, images, labels, moved, batch_size, resampling=resampling)
    evaluator(np.arange(len(images)), np.zeros(len(images), np.int64))
    return evaluator.result()


# One registry entry: its function, its own option (the flag --shift_pixels), its own summary field, and that the
# final metrics of trainers.fit grade it on the test images.
SHIFT_RIGHT = evaluation.Attack(
    shift_right,
    options={
        "shift_pixels": evaluation.Option(
            "pixels", 1.0, "pixels shift_right moves each image", valid=lambda pixels: pixels >= 0, rule="must be >= 0"
        )
    },
    summary=lambda results, seconds: {"mean_margin": float(results["shift_right"].margin.mean())},
    final="test",
)

# trainers.evaluate with SHIFT_RIGHT registered before its flags are defined.
WITH_SHIFT_RIGHT = """
import sys
from absl import app
from invariance_tf import evaluation
from test_evaluate_any import SHIFT_RIGHT

evaluation.ATTACKS["shift_right"] = SHIFT_RIGHT
from trainers import evaluate

sys.argv = ["evaluate", *sys.argv[1:]]
app.run(evaluate.main)
"""


RESOLVE_SOURCE = """
import sys
from invariance_tf.evaluation import reporting
from invariance_tf.evaluation.options import EvaluateOptions

for data_dir in sys.argv[2:]:
    _, dataset, source, *_ = reporting.resolve_source(EvaluateOptions(model=sys.argv[1], data_dir=data_dir))
    print(dataset, source)
"""


def test_a_tfds_name_as_data_dir_evaluates_that_dataset_unless_such_a_folder_exists(tmp_path):
    """trainers.evaluate takes the TFDS dataset --data_dir names for --dataset (trainers.fit refuses a mismatch)."""
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "model.keras").touch()
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE_SOURCE, "model.keras", "svhn_cropped", "cifar100", "../cifar10"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["svhn_cropped None", "cifar10 cifar100", "cifar10 ../cifar10"]


def test_an_attack_registered_in_one_entry_runs_through_the_cli(run_dir, cifar10_dir, tmp_path):
    out = tmp_path / "report"
    model, data_dir = f"--model={run_dir / 'model.keras'}", f"--data_dir={cifar10_dir}"
    command = [sys.executable, "-c", WITH_SHIFT_RIGHT, model, data_dir]
    flags = ["--examples=20", "--attack=clean,shift_right", "--shift_pixels=2", "--chunk_size=10"]
    flags.append(f"--output_dir={out}")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    result = subprocess.run(
        [*command, *flags], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "evaluation.json").read_text())
    assert list(summary) == ["clean", "shift_right"]
    entry = summary["shift_right"]
    assert list(entry) == [
        *("accuracy", "examples", "seconds", "ci95", "evaluations", "resumed_examples", "resampling", "mean_margin")
    ]
    assert (entry["examples"], entry["evaluations"], entry["resumed_examples"]) == (20, 20, 0)
    assert len(list(out.glob("evaluation_state/shift_right-*/chunk_*.npz"))) == 2
    with open(out / "examples.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[8:] == [f"shift_right_{column}" for column in ("correct", "dx", "dy", "angle", "margin")]
    assert all(
        (row["shift_right_dx"], row["shift_right_dy"], row["shift_right_angle"]) == ("2", "0", "0") for row in rows
    )
    images, labels, _ = data.load("cifar10", cifar10_dir, "test", examples=20, seed=0)
    moved = transforms.transform_xla(tf.constant(images, tf.float32), tf.constant([[2.0, 0.0, 0.0]] * 20), "composed")
    logits = keras.models.load_model(run_dir / "model.keras")(moved, training=False).numpy()
    true = logits[np.arange(20), labels]
    logits[np.arange(20), labels] = -np.inf
    margins = [float(row["shift_right_margin"]) for row in rows]
    np.testing.assert_allclose(margins, true - logits.max(axis=1), rtol=1e-4, atol=1e-3)
    assert entry["mean_margin"] == pytest.approx(np.mean(margins), abs=1e-3)
    correct = [row["shift_right_correct"] == "1" for row in rows]
    assert np.mean(correct) == entry["accuracy"] and correct == list(true > logits.max(axis=1))
    refused = subprocess.run(
        [*command, "--attack=shift_right", "--shift_pixels=-1"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.stderr.strip().splitlines()[-1] == "error: --shift_pixels=-1.0 is invalid: must be >= 0"


def test_an_attack_registered_in_one_entry_runs_through_the_final_metrics(run_dir, examples, monkeypatch):
    """trainers.fit's final metrics grade a registered attack with `final="test"` beside clean and worst_of_k."""
    monkeypatch.setitem(evaluation.ATTACKS, "shift_right", SHIFT_RIGHT)
    model = keras.models.load_model(run_dir / "model.keras")
    images, labels = examples
    config = experiment_config.ExperimentConfig(grid_examples=10, train_eval_examples=20, eval_batch_size=64, eval_k=2)
    metrics = final_metrics.robust_metrics(model, images, labels, config, np.arange(10))
    assert list(metrics)[:5] == [
        *("test_examples", "clean_accuracy", "worst_of_2_accuracy", "shift_right_accuracy", "shift_right_mean_margin")
    ]
    expected = shift_right(model, images, labels, resampling=config.eval_resampling)
    assert metrics["shift_right_accuracy"] == expected.accuracy
    assert metrics["shift_right_mean_margin"] == pytest.approx(float(expected.margin.mean()))
    regime = final_metrics.training_regime(model, images, labels, config)
    assert list(regime) == [
        *("train_eval_examples", "train_clean_accuracy", "train_worst_of_2_accuracy", "train_shift_right_accuracy"),
        "train_shift_right_mean_margin",
    ]


def test_wilson_interval_closed_forms():
    z = 1.959963984540054
    assert report.wilson_interval(0, 10) == (0.0, pytest.approx(z * z / (10 + z * z)))
    low, high = report.wilson_interval(7, 20)
    assert (1 - high, 1 - low) == pytest.approx(report.wilson_interval(13, 20))
    centre = (7 + z * z / 2) / (20 + z * z)
    assert (low + high) / 2 == pytest.approx(centre)
    assert report.wilson_interval(50, 100, 0.99)[0] < report.wilson_interval(50, 100)[0]
    with pytest.raises(ValueError, match="successes=11, trials=10"):
        report.wilson_interval(11, 10)


def test_per_shift_table_averages_over_angles(tmp_path):
    params = transforms.grid()
    per_transform = (params[:, 0] + 10 * params[:, 1] + params[:, 2] ** 2) / 1000
    report.write_per_shift_csv(tmp_path / "shift.csv", per_transform)
    with open(tmp_path / "shift.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 25
    for row in rows:
        dx, dy = float(row["dx"]), float(row["dy"])
        at = (params[:, 0] == dx) & (params[:, 1] == dy)
        assert float(row["accuracy"]) == pytest.approx(per_transform[at].mean(), rel=1e-5)
    assert transforms.per_shift_accuracy(per_transform).shape == (5, 5)


@pytest.mark.parametrize("flag", ["k", "spgd_steps", "spgd_restarts", "refine_steps"])
def test_the_attack_flags_follow_the_adversaries_rules(flag):
    """--k, --spgd_steps, --spgd_restarts (the adversaries' rules) and --refine_steps each refused at 0, by name."""
    with pytest.raises(ValueError, match=rf"^--{flag}=0 is invalid: must be >= 1$"):
        evaluation.attacks.option_values({flag: 0}, flags=True)
    with pytest.raises(ValueError, match=rf"^{flag}=0 is invalid: must be >= 1$"):
        evaluation.attacks.option_values({flag: 0})


def test_default_flags_grade_an_outside_model_as_the_papers_protocol(run_dir, cifar10_dir, tmp_path):
    """trainers.evaluate with default flags on a model expecting [0, 1] inputs, as a brute grid over the reference.

    The reference's pad-rotate-translate-crop is rebuilt from plain TF ops (tests/reference_code.py); every one of
    the 775 points is classified by `model.predict` on the rescaled images. The two must agree per example (the
    acceptance asks >= 99.5 %; here all), and so must each example's lowest margin over the grid: a small model is
    grid-robust on few test images, so the margins are what makes this test able to fail.
    """
    from reference_code import reference_code_tf

    inner = keras.models.load_model(run_dir / "model.keras")
    outside = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(255.0), inner])
    outside.save(tmp_path / "unit.keras")
    out = tmp_path / "report"
    result = run_cli(
        "trainers.evaluate",
        f"--model={tmp_path / 'unit.keras'}",
        f"--data_dir={cifar10_dir}",
        "--examples=40",
        "--attack=grid",
        "--grid_method=brute",
        "--input_range=0-1",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["grid"]["resampling"] == "reference"
    with open(out / "examples.csv") as file:
        rows = list(csv.DictReader(file))
    images, labels, _ = data.load("cifar10", cifar10_dir, "test", examples=40)
    images = images.astype(np.float32)
    margins = np.full(len(images), np.inf)
    for row in transforms.grid():
        moved = reference_code_tf(images, np.tile(row, (len(images), 1))) / 255.0
        logits = outside.predict(moved, batch_size=40, verbose=0)
        true = logits[np.arange(len(labels)), labels]
        logits[np.arange(len(labels)), labels] = -np.inf
        margins = np.minimum(margins, true - logits.max(axis=1))
    graded = np.array([float(row["grid_margin"]) for row in rows])
    agree = np.mean((margins > 0) == np.array([row["grid_correct"] == "1" for row in rows]))
    assert agree >= 0.995
    np.testing.assert_allclose(graded, margins, atol=1e-3 * np.abs(margins).max())
