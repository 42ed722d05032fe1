"""`trainers.search`: the search space, results, resuming, bad flags and the distributed chief/worker mode."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pytest
from absl import flags
from helpers import REPO_ROOT, run_cli

from invariance_tf import data, experiment_config, run_data, tuning
from invariance_tf import flags as experiment_flags

AT_KL = experiment_config.ExperimentConfig(
    adversary="worst_of_k", adversary_objective="kl", ce_on="mix", h="kl", lambda_reg=8.0, validation_examples=500
)


def tiny_search_args(data_dir: Path, search_dir: Path, *overrides: str) -> list[str]:
    """A search on the A.T.+KL config shrunk to a few seconds per trial."""
    return [
        "--flagfile",
        str(REPO_ROOT / "configs" / "cifar10_at_kl.cfg"),
        f"--data_dir={data_dir}",
        "--network=small_cnn",
        "--k=2",
        "--train_examples=64",
        "--batch_size=32",
        "--epochs=1",
        "--validation_examples=32",
        "--test_examples=10",
        "--verbose=2",
        "--tuner=random",
        "--max_trials=3",
        f"--search_dir={search_dir}",
        *overrides,
    ]


def run_search(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_cli("trainers.search", *args, timeout=timeout)


def read_trials(search_dir: Path) -> list[dict]:
    with (search_dir / "trials.csv").open() as file:
        return list(csv.DictReader(file))


def parse_command(command: str) -> experiment_config.ExperimentConfig:
    """The config a `python -m trainers.fit ...` command line trains."""
    values = flags.FlagValues()
    experiment_flags.define_experiment_flags(values)
    values(["fit", *shlex.split(command)[3:]])
    return experiment_flags.config_from_flags(values)


@pytest.fixture(scope="module")
def finished_search(cifar10_dir, tmp_path_factory) -> tuple[list[str], Path, subprocess.CompletedProcess]:
    search_dir = tmp_path_factory.mktemp("search")
    args = tiny_search_args(cifar10_dir, search_dir)
    result = run_search(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return args, search_dir, result


def test_search_writes_consistent_results(finished_search):
    _, search_dir, result = finished_search
    best = json.loads((search_dir / "best.json").read_text())
    rows = read_trials(search_dir)
    assert (search_dir / "lambda_vs_robustness.png").stat().st_size > 10_000
    assert [row["trial_id"] for row in rows] == ["0", "1", "2"]
    assert all(row["status"] == "COMPLETED" and float(row["seconds"]) > 0 for row in rows)
    assert best["objective"] == "val_worst_of_10_accuracy" and best["completed_trials"] == 3
    assert best["value"] == max(float(row["objective"]) for row in rows)
    best_row = next(row for row in rows if row["trial_id"] == best["trial_id"])
    assert float(best_row["objective"]) == best["value"]
    assert float(best_row["clean_accuracy"]) == best["clean_accuracy"]
    assert float(best_row["lambda_reg"]) == best["lambda_reg"] and best_row["h"] == best["h"]
    assert "Results summary" in result.stdout


def test_baseline_is_the_first_trial_and_the_rest_in_range(finished_search):
    _, search_dir, _ = finished_search
    rows = read_trials(search_dir)
    assert float(rows[0]["lambda_reg"]) == 0.0
    for row in rows[1:]:
        assert 0.01 <= float(row["lambda_reg"]) <= 100 and row["h"] in ("kl", "l2")
        assert row["adversary_objective"] == row["h"]


def test_best_command_retrains_the_best_config(finished_search, cifar10_dir):
    args, search_dir, _ = finished_search
    best = json.loads((search_dir / "best.json").read_text())
    assert best["command"].startswith("python -m trainers.fit ")
    retrained = parse_command(best["command"])
    assert (retrained.lambda_reg, retrained.h, retrained.adversary_objective) == (
        best["lambda_reg"],
        best["h"],
        best["adversary_objective"],
    )
    assert retrained.output_dir == str(search_dir / "best")
    assert (retrained.network, retrained.k, retrained.train_examples, retrained.data_dir) == (
        "small_cnn",
        2,
        64,
        str(cifar10_dir),
    )


@pytest.mark.slow
def test_rerun_resumes_without_repeating_trials_and_extends(finished_search):
    args, search_dir, _ = finished_search
    trial_files = sorted((search_dir / tuning.PROJECT_NAME).glob("trial_*/trial.json"))
    stamps = [path.stat().st_mtime_ns for path in trial_files]
    rerun = run_search(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Reloading Tuner" in rerun.stdout and "Running Trial" not in rerun.stdout
    assert len(read_trials(search_dir)) == 3
    assert [path.stat().st_mtime_ns for path in trial_files] == stamps
    extended = run_search(*args, "--max_trials=4")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert extended.stdout.count("Running Trial") == 1
    assert [row["trial_id"] for row in read_trials(search_dir)] == ["0", "1", "2", "3"]


def test_resuming_with_other_search_flags_is_refused(tmp_path):
    options = tuning.SearchOptions(search_dir=str(tmp_path))
    tuning.check_resumable(AT_KL, options)
    tuning.check_resumable(AT_KL, dataclasses.replace(options, max_trials=50))
    with pytest.raises(ValueError, match=r"search started with --lambda_max=100.0, --lr=0.1: use another --search_dir"):
        tuning.check_resumable(dataclasses.replace(AT_KL, lr=0.05), dataclasses.replace(options, lambda_max=10.0))
    tuning.check_resumable(dataclasses.replace(AT_KL, overwrite=True), dataclasses.replace(options, lambda_max=10.0))


def test_bad_search_flag_fails_fast_with_one_line(tmp_path):
    result = run_search(
        "--flagfile",
        str(REPO_ROOT / "configs" / "cifar10_at_kl.cfg"),
        "--data_dir=/nonexistent/cifar10",
        "--lambda_min=10",
        "--lambda_max=1",
        f"--search_dir={tmp_path}",
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "error: --lambda_min=10.0 is invalid: must be < --lambda_max=1.0"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "change,message",
    [
        ({"lambda_min": 10.0, "lambda_max": 1.0}, "--lambda_min=10.0 is invalid: must be < --lambda_max=1.0"),
        ({"lambda_min": 0.0}, "--lambda_min=0.0 is invalid: must be > 0"),
        ({"h_choices": ("kl", "js")}, "--h_choices=kl,js is invalid: valid semimetrics are ['kl', 'l2']"),
        ({"h_choices": ()}, "--h_choices= is invalid: valid semimetrics are"),
        ({"max_trials": 0}, "--max_trials=0 is invalid: must be >= 1"),
        ({"tuner": "grid"}, "--tuner=grid is invalid: valid values are ['bayesian', 'hyperband', 'random']"),
        ({"objective": "spgd"}, "--objective=spgd is invalid: valid values are ['grid', 'worst_of_k']"),
    ],
)
def test_bad_search_options_name_the_flag(change, message):
    with pytest.raises(ValueError) as error:
        tuning.validate(AT_KL, dataclasses.replace(tuning.SearchOptions(), **change))
    assert str(error.value).startswith(message)


def test_tuning_needs_a_validation_split(cifar10_dir):
    config = dataclasses.replace(AT_KL, data_dir=str(cifar10_dir), validation_examples=0)
    with pytest.raises(ValueError, match="--validation_examples=0 is invalid: tuning needs a held-out validation"):
        tuning.validate(config, tuning.SearchOptions())


def test_a_trainable_config_without_adversary_cannot_be_tuned(cifar10_dir):
    config = experiment_config.ExperimentConfig(data_dir=str(cifar10_dir), validation_examples=10)
    config.validate()
    with pytest.raises(ValueError, match="--adversary=none cannot give x~ for --ce_on=nat --lambda_reg=100.0"):
        tuning.validate(config, tuning.SearchOptions())


def test_incomplete_distributed_environment_is_refused(monkeypatch):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.delenv("KERASTUNER_ORACLE_PORT", raising=False)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_PORT is not"):
        tuning.SearchOptions().validate()


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"regularise": False}, (0.0, "kl", "kl")),
        ({"regularise": True, "lambda": 3.0, "h": "l2"}, (3.0, "l2", "l2")),
        ({"regularise": True, "lambda": 0.5, "h": "kl"}, (0.5, "kl", "kl")),
    ],
)
def test_semimetric_adversary_objective_follows_h(values, expected):
    config = tuning.apply_hyperparameters(AT_KL, values)
    assert (config.lambda_reg, config.h, config.adversary_objective) == expected


def test_the_unregularised_trial_of_a_natural_ce_config_is_standard_training(cifar10_dir):
    config = dataclasses.replace(AT_KL, ce_on="nat", data_dir=str(cifar10_dir))
    unregularised = tuning.apply_hyperparameters(config, {"regularise": False})
    assert (unregularised.lambda_reg, unregularised.adversary) == (0.0, "none")
    unregularised.validate()
    assert tuning.apply_hyperparameters(AT_KL, {"regularise": False}).adversary == AT_KL.adversary


def test_cross_entropy_adversary_objective_stays():
    config = tuning.apply_hyperparameters(
        dataclasses.replace(AT_KL, adversary_objective="ce"), {"regularise": True, "lambda": 3.0, "h": "l2"}
    )
    assert (config.h, config.adversary_objective) == ("l2", "ce")


def oracle_with_space(baseline: dict | None, seed: int) -> kt.Oracle:
    oracle = tuning.RandomSearchOracle(
        objective=kt.Objective("score", "max"), max_trials=10, seed=seed, baseline=baseline
    )
    hp = oracle.get_space()
    hp.Boolean("regularise", default=True)
    with hp.conditional_scope("regularise", [True]):
        hp.Float("lambda", 0.01, 100.0, sampling="log")
        hp.Choice("h", ["kl", "l2"])
    oracle.update_space(hp)
    return oracle


def draw(oracle: kt.Oracle) -> dict:
    """The oracle's next random candidate, recorded as tried."""
    values = oracle._random_values()
    oracle._tried_so_far.add(oracle._compute_values_hash(values))
    return values


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_oracle_draws_the_baseline_first_and_once(seed):
    oracle = oracle_with_space({"regularise": False}, seed)
    assert draw(oracle) == {"regularise": False}
    assert all(draw(oracle)["regularise"] for _ in range(8))


def test_oracle_without_baseline_draws_it_only_by_chance():
    first = [draw(oracle_with_space(None, seed))["regularise"] for seed in range(1, 11)]
    assert 0 < sum(first) < 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_chief_and_two_workers(cifar10_dir, tmp_path):
    args = tiny_search_args(cifar10_dir, tmp_path, "--max_trials=4")
    base = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "trainers.search", *args],
            cwd=REPO_ROOT,
            env={**base, "KERASTUNER_TUNER_ID": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("chief", "tuner0", "tuner1")
    }
    try:
        outputs = {name: process.communicate(timeout=170)[0] for name, process in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
    for name, process in processes.items():
        assert process.returncode == 0, f"{name}:\n{outputs[name][-3000:]}"
    assert "no trials left; the chief writes the results" in outputs["tuner0"]
    rows = read_trials(tmp_path)
    assert [row["trial_id"] for row in rows] == ["0", "1", "2", "3"]
    assert all(row["status"] == "COMPLETED" for row in rows) and float(rows[0]["lambda_reg"]) == 0.0
    assert json.loads((tmp_path / "best.json").read_text())["completed_trials"] == 4
    assert {"tuner0.json", "tuner1.json"} <= {path.name for path in (tmp_path / tuning.PROJECT_NAME).iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("tuner,objective", [("bayesian", "grid"), ("hyperband", "worst_of_k")])
def test_each_tuner_and_objective(cifar10_dir, tmp_path, tuner, objective):
    result = run_search(
        *tiny_search_args(
            cifar10_dir,
            tmp_path,
            f"--tuner={tuner}",
            f"--objective={objective}",
            "--grid_validation_examples=8",
            "--epochs=2",
            "--h_choices=l2",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((tmp_path / "best.json").read_text())
    rows = read_trials(tmp_path)
    assert best["objective"] == ("val_grid_accuracy" if objective == "grid" else "val_worst_of_10_accuracy")
    assert len(rows) == 3 and float(rows[0]["lambda_reg"]) == 0.0
    assert {row["h"] for row in rows[1:] if float(row["lambda_reg"]) > 0} == {"l2"}
    assert best["value"] == max(float(row["objective"]) for row in rows)


def tiny_splits(per_class: int = 20, classes: int = 10) -> run_data.Splits:
    """Class-sorted arrays, as an ImageFolder copy loads them."""
    labels = np.repeat(np.arange(classes), per_class).astype("int64")
    images = np.zeros((len(labels), 8, 8, 3), "float32")
    return run_data.Splits((images, labels), (images, labels), (images, labels), data.DATASETS["cifar10"])


def test_grid_objective_reads_every_class_of_the_validation_split():
    options = tuning.SearchOptions(objective="grid", grid_validation_examples=20)
    hypermodel = tuning.InvarianceHyperModel(AT_KL, options, tiny_splits())
    callback = hypermodel._objective_callback(AT_KL)
    assert np.bincount(callback.labels, minlength=10).tolist() == [2] * 10


def test_a_continued_hyperband_trial_sees_the_batches_of_its_epochs(monkeypatch):
    seen = {}

    def stop(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(tuning.data, "train_dataset", stop)
    hypermodel = tuning.InvarianceHyperModel(AT_KL, tuning.SearchOptions(), tiny_splits())
    with pytest.raises(RuntimeError, match="stop before training"):
        hypermodel.fit(kt.HyperParameters(), model=None, epochs=4, initial_epoch=2)
    assert seen["first_epoch"] == 2
