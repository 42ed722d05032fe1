"""The paper-table reproduction, the cost comparison and the robustness plots, at smoke scale on real CIFAR-10."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run, run_cli
from PIL import Image

from benchmarks import ablation, compare_cost, reproduce
from benchmarks.common import cli, protocols, publishing, runs, tables
from invariance_tf import builders, data, plots, precision, report, resume, transforms

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_reproduce(*flags: str) -> None:
    """`python -m benchmarks.reproduce <flags>`, in this process."""
    reproduce.main(cli.parse(reproduce.ReproduceOptions, flags))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 100, image.size


# Plots, on synthetic per-transform accuracies.


def synthetic_accuracy(function) -> np.ndarray:
    """A per-transform accuracy vector in `transforms.grid` order, `function(dx, dy, angle)` at each point."""
    dx, dy, angle = transforms.grid().T
    return function(dx, dy, angle)


def test_per_angle_accuracy_is_the_mean_over_translations():
    values = np.random.default_rng(0).random(775)
    np.testing.assert_allclose(transforms.per_angle_accuracy(values), values.reshape(5, 5, 31).mean(axis=(0, 1)))
    by_angle = synthetic_accuracy(lambda dx, dy, angle: 1 - np.abs(angle) / 60)
    np.testing.assert_allclose(
        transforms.per_angle_accuracy(by_angle), 1 - np.abs(np.linspace(-30, 30, 31)) / 60, atol=1e-6
    )


def test_angle_translation_maps_average_over_the_other_shift():
    values = synthetic_accuracy(lambda dx, dy, angle: (dx + 3) / 6 * (1 - np.abs(angle) / 60))
    by_dx, by_dy = transforms.angle_translation_maps(values)
    assert by_dx.shape == (5, 31) and by_dy.shape == (5, 31)
    expected = (np.linspace(-3, 3, 5)[:, None] + 3) / 6 * (1 - np.abs(np.linspace(-30, 30, 31)) / 60)
    np.testing.assert_allclose(by_dx, expected, atol=1e-6)
    np.testing.assert_allclose(by_dy, np.broadcast_to(expected.mean(axis=0), (5, 31)), atol=1e-6)
    dxs, dys, angles = transforms.grid_axes()
    np.testing.assert_allclose(dxs, np.linspace(-3, 3, 5))
    np.testing.assert_allclose(angles, np.linspace(-30, 30, 31))


def test_plots_write_valid_pngs(tmp_path):
    values = synthetic_accuracy(lambda dx, dy, angle: 1 - np.abs(angle) / 60 - np.abs(dx) / 20)
    plots.robustness_landscape(values, tmp_path / "landscape.png", title="synthetic")
    plots.per_angle_curves({"a": values, "b": values / 2}, tmp_path / "curves.png")
    plots.cost_vs_robustness(
        ["A.T. k=1", "A.T. k=10", "S-PGD"],
        np.array([10.0, 60.0, 40.0]),
        np.array([0.2, 0.4, 0.35]),
        tmp_path / "cost.png",
        groups=["A.T.", "A.T.", "S-PGD"],
    )
    plots.lambda_sweep(
        [0.0, 1.0, 0.1, 10.0],
        [0.3, 0.5, 0.4, 0.45],
        [0.8, 0.75, 0.78, 0.7],
        ["kl", "kl", "l2", "l2"],
        tmp_path / "lambda.png",
        objective_name="val_grid_accuracy",
        lambda_min=0.01,
    )
    for name in ("landscape.png", "curves.png", "cost.png", "lambda.png"):
        assert_png(tmp_path / name)


def test_plots_name_a_wrong_vector_length(tmp_path):
    with pytest.raises(ValueError, match=r"vector of 775 = 5 x 5 x 31 .* got shape \(774,\)"):
        plots.robustness_landscape(np.zeros(774), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="one equal, non-zero length"):
        plots.cost_vs_robustness(["a"], np.zeros(2), np.zeros(2), tmp_path / "bad.png")


# Results and table, from synthetic metrics.


def test_row_summary_means_over_seeds_and_keeps_each_seed():
    summary = tables.row_summary(
        {
            1: {"clean_accuracy": 0.6, "grid_accuracy": 0.2, "train_seconds": 100.0, "epochs": 6},
            0: {"clean_accuracy": 0.5, "grid_accuracy": 0.3, "train_seconds": 50.0, "epochs": 6},
        }
    )
    assert summary["seed"] == [0, 1] and list(summary["seeds"]) == ["0", "1"]
    assert summary["clean_accuracy"] == pytest.approx(0.55)
    assert summary["grid_accuracy"] == pytest.approx(0.25)
    assert summary["train_seconds"] == pytest.approx(75.0)
    assert summary["seeds"]["1"] == {"clean_accuracy": 0.6, "grid_accuracy": 0.2, "train_seconds": 100.0}


def test_the_training_accuracy_is_the_ce_batchs_and_is_averaged_only_over_seeds_that_logged_it():
    at = {"clean_accuracy": 0.6, "worst_of_10_accuracy": 0.4, "final_train_logs": {"acc_nat": 0.9, "acc_adv": 0.5}}
    std = {"clean_accuracy": 0.8, "worst_of_10_accuracy": 0.1, "final_train_logs": {"acc_nat": 0.9}}
    assert (tables.train_accuracy(at), tables.train_accuracy(std), tables.train_accuracy({})) == (0.5, 0.9, None)
    summary = tables.row_summary({0: at, 1: {"clean_accuracy": 0.4, "worst_of_10_accuracy": 0.2}})
    assert "train_accuracy" not in summary and summary["seeds"]["0"]["train_accuracy"] == 0.5
    assert summary["clean_accuracy"] == pytest.approx(0.5)


def test_the_table_sets_each_runs_training_accuracy_beside_its_test_accuracies():
    at = tables.row_summary(
        {
            0: {"clean_accuracy": 0.6, "worst_of_10_accuracy": 0.4, "final_train_logs": {"acc_adv": 0.55}},
            1: {"clean_accuracy": 0.7, "worst_of_10_accuracy": 0.45, "final_train_logs": {"acc_adv": 0.65}},
        }
    )
    lines = tables._regime_lines({"at": at, "std": tables.row_summary({0: {"clean_accuracy": 0.8}})})
    assert lines[-2:] == ["| A.T., seed 0 | 55.0 | 40.0 | 60.0 |", "| A.T., seed 1 | 65.0 | 45.0 | 70.0 |"]
    assert tables._regime_lines({"std": tables.row_summary({0: {"clean_accuracy": 0.8}})}) == []


def test_table_shows_seeds_paper_numbers_and_pending_rows():
    row = tables.row_summary(
        {
            0: {"clean_accuracy": 0.5, "grid_accuracy": 0.25, "train_seconds": 120.0},
            1: {"clean_accuracy": 0.7, "grid_accuracy": 0.35, "train_seconds": 60.0},
        }
    )
    info = {
        "dataset": "cifar10",
        "scale": "mini",
        "data": "/data",
        "network": "ResNet-8",
        "subset": "10 images",
        "epochs": 6,
        "test_examples": 1000,
        "grid_examples": 1000,
        "note": "",
        "date": "2019-12-08T00:00:00+00:00",
        "seeds": {"da": [0, 1], "da_kl": [0, 1], "at": [0]},
        "measured": {
            "da_seed0": {"date": "2019-12-08T10:00:00+00:00", "machine": {"cpu_cores": 2, "cpu": "Xeon", "gpus": 0}},
            "da_seed1": {"date": "2019-12-09T10:00:00+00:00", "machine": {"cpu_cores": 8, "cpu": "EPYC", "gpus": 1}},
            "da_kl_seed0": None,
        },
    }
    da_kl = tables.row_summary({0: {"clean_accuracy": 0.5, "grid_accuracy": 0.25, "train_seconds": 120.0}})
    text = tables.paper_table({"rows": {"da": row, "da_kl": da_kl}, "protocol": info}, ["da", "da_kl", "at"])
    da = next(line for line in text.splitlines() if line.startswith("| D.A. |"))
    assert da == "| D.A. | 89.93 | 60.0 (50.0 / 70.0) | 58.3 | 30.0 (25.0 / 35.0) | 1.5 min (2.0 min / 60 s) |"
    assert "| D.A.+KL | 89.19 | 50.0 (seed 1 pending) | 73.3 | 25.0 | 2.0 min |" in text
    assert "| A.T. | 91.78 | pending | 71.0 | pending | pending |" in text
    assert "| G-ResNet | 93.08 | not run | 71.6 | not run | not run |" in text
    assert (
        "Trained on 2 CPU cores (Xeon), 0 GPU(s): da_seed0 2019-12-08; 8 CPU cores (EPYC), 1 GPU(s): "
        "da_seed1 2019-12-09; a machine not recorded: da_kl_seed0."
    ) in text


# The commands, at smoke scale on real CIFAR-10.


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cifar10_dir) -> Path:
    out = tmp_path_factory.mktemp("reproduce") / "cifar10_smoke"
    run_reproduce("--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}")
    return out


def test_reproduce_smoke_writes_consistent_results_and_table(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    rows = results["rows"]
    assert list(rows) == list(protocols.SCALES["smoke"].rows) == ["std", "at_kl"]
    for name, row in rows.items():
        assert set(row) >= {"clean_accuracy", "grid_accuracy", "train_seconds", "seed", "seeds"}
        assert row["seed"] == [0] and list(row["seeds"]) == ["0"]
        assert 0.0 <= row["grid_accuracy"] <= row["clean_accuracy"] <= 1.0, name
        assert 0.0 <= row["worst_of_10_accuracy"] <= 1.0
        assert row["train_seconds"] > 0
        assert row["seeds"]["0"]["grid_accuracy"] == row["grid_accuracy"]
        metrics = json.loads((smoke_run / f"{name}_seed0" / "metrics.json").read_text())
        assert metrics["clean_accuracy"] == row["clean_accuracy"]
    protocol = results["protocol"]
    assert protocol["scale"] == "smoke" and protocol["epochs"] == 1 and protocol["test_examples"] == 20
    assert protocol["network"] == "ResNet-8 (--resnet_n=1)" and protocol["grid_examples"] == 20
    assert {"date", "subset"} <= set(protocol)
    for name in rows:
        assert protocol["measured"][f"{name}_seed0"]["machine"] == runs.machine()
    table = (smoke_run / "table.md").read_text()
    for name, label in (("std", "std"), ("at_kl", "A.T.+KL")):
        line = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[2] == f"{100 * rows[name]['clean_accuracy']:.1f}"
        assert cells[4] == f"{100 * rows[name]['grid_accuracy']:.1f}"
    assert "| D.A. | 89.93 | not run | 58.3 |" in table


def test_reproduce_smoke_writes_plots(smoke_run):
    assert_png(smoke_run / "per_angle.png")
    for name in ("std", "at_kl"):
        assert_png(smoke_run / f"{name}_seed0" / "robustness_landscape.png")
        landscape = json.loads((smoke_run / f"{name}_seed0" / "landscape.json").read_text())
        assert landscape["examples"] == 20 and len(landscape["per_transform_accuracy"]) == 775


def test_reproduce_rerun_skips_finished_runs(smoke_run, cifar10_dir, capsys):
    finished = {path: path.stat().st_mtime_ns for path in smoke_run.glob("*_seed0/*.json")}
    capsys.readouterr()
    run_reproduce("--dataset=cifar10", "--scale=smoke", f"--out={smoke_run}", f"--data_dir={cifar10_dir}")
    output = capsys.readouterr().out
    assert output.count("skipping") == 2 and f"training {smoke_run}" not in output and "landscape of" not in output
    assert {path: path.stat().st_mtime_ns for path in finished} == finished


def test_reproduce_rows_chooses_what_trains_and_the_table_keeps_every_row(smoke_run, cifar10_dir, capsys):
    capsys.readouterr()
    run_reproduce(
        "--dataset=cifar10", "--scale=smoke", f"--out={smoke_run}", f"--data_dir={cifar10_dir}", "--rows=at_kl"
    )
    assert capsys.readouterr().out.count("skipping") == 1
    assert list(json.loads((smoke_run / "results.json").read_text())["rows"]) == ["std", "at_kl"]


def test_a_budgets_table_keeps_the_rows_finished_in_its_folder(tmp_path, cifar10_dir):
    """With --epochs (another budget, its own folder), training one row keeps the rows finished there before."""
    out = tmp_path / "budget"
    common = ["--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}", "--epochs=1"]
    run_reproduce(*common, "--rows=std")
    run_reproduce(*common, "--rows=at_kl")
    assert list(json.loads((out / "results.json").read_text())["rows"]) == ["std", "at_kl"]


def test_table_seeds_keep_the_scales_seeds_of_a_row_trained_for_one_seed():
    assert protocols.table_seeds("cpu", ["at_kl"], [1]) == {
        "std": [0],
        "da": [0, 1],
        "da_kl": [0, 1],
        "at": [0, 1],
        "at_kl": [0, 1],
        "at_l2": [0, 1],
        "grn": [0],
    }
    assert protocols.table_seeds("smoke", ["std"], [2]) == {"std": [0, 2], "at_kl": [0]}
    assert protocols.table_seeds("smoke", ["at"], None) == {"std": [0], "at": [0], "at_kl": [0]}
    assert protocols.table_seeds("cpu", ["at", "at_kl"], None, only_trained_rows=True) == {
        "at": [0, 1],
        "at_kl": [0, 1],
    }


def copy_with_a_finished_std_seed1(smoke_run: Path, tmp_path: Path) -> Path:
    """A copy of the smoke protocol's outputs with a finished std run of seed 1 (std seed 0's, relabelled)."""
    out = tmp_path / "cifar10_smoke"
    shutil.copytree(smoke_run, out)
    shutil.copytree(out / "std_seed0", out / "std_seed1")
    saved = json.loads((out / "std_seed1" / "config.json").read_text())
    (out / "std_seed1" / "config.json").write_text(json.dumps({**saved, "seed": 1}))
    return out


def test_reproduce_one_seed_of_a_row_keeps_its_other_seeds_in_the_table(smoke_run, cifar10_dir, tmp_path, capsys):
    out = copy_with_a_finished_std_seed1(smoke_run, tmp_path)
    capsys.readouterr()
    run_reproduce(
        "--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}", "--rows=std", "--seeds=1"
    )
    assert capsys.readouterr().out.count("skipping") == 1
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert list(rows) == ["std", "at_kl"] and list(rows["std"]["seeds"]) == ["0", "1"]


@pytest.mark.parametrize(
    "field,value,shown",
    [("ce_adversary_objective", "same", "same"), ("limits", [3.0, 3.0, 20.0], "3,3,20"), ("grid_examples", 10, "10")],
)
def test_reproduce_refuses_a_finished_run_trained_or_graded_with_other_flags(
    field, value, shown, smoke_run, cifar10_dir, tmp_path
):
    out = tmp_path / "cifar10_smoke"
    shutil.copytree(smoke_run, out)
    saved = json.loads((out / "at_kl_seed0" / "config.json").read_text())
    (out / "at_kl_seed0" / "config.json").write_text(json.dumps({**saved, field: value}))
    with pytest.raises(SystemExit) as refused:
        run_reproduce("--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}", "--rows=std")
    assert str(refused.value) == (
        f"error: {out / 'at_kl_seed0'} is a finished run made with --{field}={shown}, which this "
        "protocol no longer uses: move it out of --out to train the row anew"
    )


def test_reproduce_every_table_written_shows_every_finished_run(smoke_run, cifar10_dir, tmp_path, monkeypatch):
    out = copy_with_a_finished_std_seed1(smoke_run, tmp_path)
    written = []
    write_outputs = reproduce.write_outputs

    def recording_write_outputs(dataset, scale, out, configs, finished, *args):
        written.append({row: sorted(runs) for row, runs in finished.items()})
        return write_outputs(dataset, scale, out, configs, finished, *args)

    monkeypatch.setattr(reproduce, "write_outputs", recording_write_outputs)
    run_reproduce(
        "--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}", "--seeds=0,1", "--rows=std"
    )
    assert written and all(tables == {"std": [0, 1], "at_kl": [0]} for tables in written)


# Runs the smoke protocol and SIGKILLs it when the A.T.+KL run, trained and backed up, starts its evaluation.
KILL_AT_AT_KL_EVALUATION = """
import os, signal, sys
from benchmarks import reproduce
from benchmarks.common import cli
from invariance_tf.evaluation import final_metrics

evaluate = final_metrics.robust_metrics

def killing_robust_metrics(model, images, labels, config, *args, **kwargs):
    if config.output_dir.endswith("at_kl_seed0"):
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate(model, images, labels, config, *args, **kwargs)

final_metrics.robust_metrics = killing_robust_metrics
flags = ["--dataset=cifar10", "--scale=smoke", "--out=" + sys.argv[1], "--data_dir=" + sys.argv[2]]
reproduce.main(cli.parse(reproduce.ReproduceOptions, flags))
"""


@pytest.mark.slow
def test_reproduce_killed_mid_row_keeps_finished_rows_and_resumes_the_killed_one(tmp_path, cifar10_dir, capsys):
    out = tmp_path / "cifar10_smoke"
    killed = run([sys.executable, "-c", KILL_AT_AT_KL_EVALUATION, str(out), str(cifar10_dir)])
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert list(json.loads((out / "results.json").read_text())["rows"]) == ["std"]
    assert (out / "at_kl_seed0" / "backup").is_dir() and not (out / "at_kl_seed0" / "metrics.json").exists()
    std_metrics = (out / "std_seed0" / "metrics.json").read_text()
    run_reproduce("--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}")
    output = capsys.readouterr().out
    assert f"skipping {out / 'std_seed0'}" in output and f"training {out / 'at_kl_seed0'}" in output
    assert (out / "std_seed0" / "metrics.json").read_text() == std_metrics
    resumed = json.loads((out / "at_kl_seed0" / "metrics.json").read_text())
    assert resumed["epochs_this_process"] == 0 and len(resumed["epoch_seconds"]) == 1
    assert list(json.loads((out / "results.json").read_text())["rows"]) == ["std", "at_kl"]


@pytest.mark.parametrize("scale", ["cpu", "mini"])
def test_smaller_scales_inherit_the_faithful_protocol(scale):
    """Equal originals per step for every row, flips only, independent searches, the reference's resampling."""
    configs = {
        row: protocols.scale_config("cifar10", row, scale, 0, Path("out"), None) for row in protocols.SCALES[scale].rows
    }
    assert len({config.batch_size for config in configs.values()}) == 1
    for row, config in configs.items():
        assert (config.augment, config.shared_candidates, config.resampling) == ("flip", False, "reference"), row
        assert not config.reference_half_batch_ce, row
    assert builders.build_adversary(configs["std"]).limits == (4.0, 4.0, 0.0)


def test_cpu_scale_configs_keep_each_rows_method_and_scale_the_batch():
    configs = {row: protocols.scale_config("cifar10", row, "cpu", 0, Path("out"), None) for row in protocols.ROWS}
    for row, config in configs.items():
        paper = protocols.config_from_flagfile(protocols.row_flagfile("cifar10", row))
        method = (
            "adversary",
            "k",
            "adversary_objective",
            "ce_adversary_objective",
            "ce_on",
            "h",
            "lambda_reg",
            "limits",
            "adversary_limits",
            "shared_candidates",
            "resampling",
            "augment",
        )
        assert [getattr(config, name) for name in method] == [getattr(paper, name) for name in method], row
        assert config.batch_size == 2 * paper.batch_size and config.test_examples == 0, row
        assert config.grid_examples == 2000 and config.lr_schedule == "onecycle", row
    assert configs["std"].network == "resnet9" and configs["grn"].network == "g_resnet"
    assert (configs["at_kl"].batch_size, configs["at"].batch_size) == (128, 128)
    longer = protocols.scale_config("cifar10", "at_kl", "cpu", 0, Path("out"), None, epochs=24)
    assert longer == dataclasses.replace(configs["at_kl"], epochs=24) and configs["at_kl"].epochs == 12


def test_evaluate_plot_writes_the_landscape(smoke_run):
    model_dir = smoke_run / "std_seed0"
    (model_dir / "robustness_landscape.png").unlink()
    result = run_cli("trainers.evaluate", f"--model_dir={model_dir}", "--attack=grid", "--examples=10", "--plot")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_png(model_dir / "robustness_landscape.png")
    refused = run_cli("trainers.evaluate", f"--model_dir={model_dir}", "--attack=clean", "--plot")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == "error: --plot needs grid in --attack=clean"


def test_reproduce_without_data_reports_no_data(tmp_path):
    out = tmp_path / "svhn"
    result = run_cli(
        "benchmarks.reproduce",
        "--dataset=svhn",
        "--scale=smoke",
        f"--out={out}",
        env={"TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no data" in result.stdout.strip().splitlines()[-1]
    results = json.loads((out / "results.json").read_text())
    assert results["rows"] == {} and results["protocol"]["data"].startswith("no data")
    table = (out / "table.md").read_text()
    assert "| std | 95.48 | no data | – | no data | no data |" in table
    assert not (out / "per_angle.png").exists() and not list(out.glob("*_seed*"))


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--rows=std,gcnn"],
            "--rows=std,gcnn is invalid: unknown ['gcnn']; valid rows are "
            "['std', 'da', 'da_kl', 'at', 'at_kl', 'at_l2', 'grn']",
        ),
        (["--rows=std,std"], "--rows=std,std is invalid: repeats ['std']"),
        (["--seeds=0,x"], "--seeds=0,x is invalid: expected numbers"),
        (["--seeds=1,1"], "--seeds=1,1 is invalid: must be distinct integers >= 0"),
        (["--epochs=0"], "--epochs=0 is invalid: must be >= 1"),
        (["--publish"], "--publish is invalid: smoke results are never published"),
        (["--commit"], "--commit is invalid: smoke results are never committed"),
        (
            ["--scale=huge"],
            "flag --scale=huge: value should be one of <mini|smoke|cpu|full|confirm|cpu_regime_grn_invariant|"
            "confirm_grn_invariant|cpu_regime_grn_flatten|confirm_grn_flatten|cpu_regime_grn_capacity>",
        ),
    ],
)
def test_reproduce_bad_flags_exit_with_one_line_naming_the_value(args, message, tmp_path):
    with pytest.raises(SystemExit) as refused:
        run_reproduce("--dataset=cifar10", "--scale=smoke", f"--out={tmp_path}", *args)
    assert str(refused.value) == f"error: {message}"


def test_reproduce_names_a_missing_flag_and_refuses_commit_outside_the_checkout(tmp_path):
    with pytest.raises(SystemExit) as refused:
        cli.parse(reproduce.ReproduceOptions, [f"--out={tmp_path}"])
    assert str(refused.value) == "error: --dataset is required: valid values are ['cifar10', 'cifar100', 'svhn']"
    with pytest.raises(SystemExit) as refused:
        run_reproduce("--dataset=cifar10", "--scale=mini", f"--out={tmp_path}", "--commit")
    assert str(refused.value) == (
        f"error: --commit is invalid: needs --out inside the checkout {protocols.REPO_ROOT}; got --out={tmp_path}"
    )


@pytest.mark.slow
def test_compare_cost_smoke_writes_csv_and_plot(tmp_path, cifar10_dir):
    out = tmp_path / "cost"
    flags = ["--dataset=cifar10", "--scale=smoke", f"--out={out}", f"--data_dir={cifar10_dir}"]
    compare_cost.main(cli.parse(compare_cost.CompareCostOptions, flags))
    with (out / "cost.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == compare_cost.FIELDS
    assert [(row["method"], row["k"]) for row in rows] == [
        ("A.T.", "1"),
        ("A.T.", "10"),
        ("A.T.", "20"),
        ("A.T.+KL", "1"),
        ("A.T.+KL", "10"),
        ("A.T.+KL", "20"),
        ("S-PGD-5 A.T.", ""),
        ("S-PGD-5 A.T.+KL", ""),
    ]
    for row in rows:
        assert 0.0 <= float(row["grid_accuracy"]) <= float(row["clean_accuracy"]) <= 1.0
        assert float(row["train_seconds"]) > 0 and row["seed"] == "0"
        assert 0 < float(row["train_seconds_at_fastest_epoch"]) <= float(row["train_seconds"]) * 1.001
    policy = json.loads((out / "at_k1_seed0" / "precision.json").read_text())["policy"]
    native = precision.resolve("auto").reason.removeprefix("auto: ")
    assert rows[0]["machine"] == f"{precision.cpu_model()}; {native}; {policy}"
    config = json.loads((out / "spgd_at_kl_seed0" / "config.json").read_text())
    assert (config["adversary"], config["spgd_steps"], config["adversary_objective"]) == ("spgd", 5, "kl")
    assert json.loads((out / "at_k20_seed0" / "config.json").read_text())["k"] == 20
    assert_png(out / "cost_vs_robustness.png")


def test_the_cost_comparisons_regime_scale_trains_the_ablations_small_data_resnet9_pair(tmp_path):
    """Its worst-of-10 points are the ablation's regime runs, apart from where they are written."""
    for i, row in enumerate(ablation.ROWS):
        expected = ablation.run_config(row, ablation.FACTORS["small_data_resnet9"][1 + i], "mini", 0, tmp_path, None)
        cost = protocols.run_config("cifar10", row, (*compare_cost.SCALES["regime"], "--k=10"), 0, tmp_path, None)
        assert dataclasses.replace(cost, output_dir=expected.output_dir) == expected


def test_compare_cost_commits_only_inside_the_checkout():
    flags = ["--dataset=cifar10", "--out=/tmp/cost", "--commit"]
    with pytest.raises(SystemExit, match="--commit is invalid: needs --out inside the checkout"):
        cli.parse(compare_cost.CompareCostOptions, flags)


def test_commit_results_commits_the_records_only_and_drops_a_finished_runs_carried_backup(tmp_path, monkeypatch):
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    out = tmp_path / "docs" / "results" / "cifar10_cpu"
    run_dir = out / "std_seed0"
    (run_dir / "backup" / "epoch-3").mkdir(parents=True)
    (run_dir / "backup" / "epoch-3" / "latest.weights.h5").write_bytes(b"weights")
    git("add", "-f", "docs")
    git("commit", "-qm", "carry the unfinished run")
    shutil.rmtree(run_dir / "backup")
    for name in ("flags.cfg", "metrics.json", "config.json", "epoch_seconds.json", "model.keras"):
        (run_dir / name).write_text("{}")
    (out / "table.md").write_text("table")
    (tmp_path / "unrelated.txt").write_text("not mine")
    monkeypatch.setattr(publishing, "REPO_ROOT", tmp_path)
    publishing.commit_results(out, "cifar10 cpu, std_seed0")
    assert git("log", "-1", "--format=%s").strip() == "Results: cifar10 cpu, std_seed0"
    assert sorted(git("ls-files").split()) == sorted(
        f"docs/results/cifar10_cpu/{name}"
        for name in (
            "table.md",
            "std_seed0/flags.cfg",
            "std_seed0/metrics.json",
            "std_seed0/config.json",
            "std_seed0/epoch_seconds.json",
        )
    )


@pytest.mark.parametrize(
    "module,flags",
    [
        ("ablation", ["--out=out", "--factors", "base,crop_flip", "--seeds", "0,1"]),
        ("compare_cost", ["--dataset=cifar10", "--out=out"]),
        ("cpu_recipe", ["--throughput", "--steps=2"]),
        ("finetune", ["--out=out", "--runs=da_kl_e2"]),
        ("gresnet_throughput", ["--batch_size=64"]),
        ("grid_eval", []),
        ("reproduce", ["--dataset=cifar10", "--out=out", "--rows=std,at"]),
        ("step_limits", ["--network=resnet"]),
        ("train_throughput", []),
        ("vs_peers", []),
    ],
)
def test_every_benchmark_reads_its_flags_into_its_options(module, flags):
    benchmark = importlib.import_module(f"benchmarks.{module}")
    (options_type,) = (value for name, value in vars(benchmark).items() if name.endswith("Options"))
    assert dataclasses.is_dataclass(options_type)
    assert isinstance(cli.parse(options_type, flags), options_type)


def test_the_table_pairs_each_regularised_row_with_its_baseline_on_the_same_images():
    """Δ = b − a per seed both rows finished, from their per-example grid outcomes; unmatched seeds are left out."""
    rng = np.random.default_rng(0)
    rates = (("da", 0.4), ("da_kl", 0.55), ("at", 0.5), ("at_kl", 0.52), ("at_l2", 0.53), ("grn", 0.3))
    bits = {row: rng.random(400) < p for row, p in rates}

    def metrics(row):
        return {"grid_correct": "".join("1" if bit else "0" for bit in bits[row])}

    finished = {"da": {0: metrics("da")}, "da_kl": {0: metrics("da_kl"), 1: metrics("da_kl")}, "at": {0: metrics("at")}}
    finished["at_kl"] = {0: metrics("at_kl")}
    finished["at_l2"] = {0: metrics("at_l2")}
    finished["grn"] = {0: metrics("grn")}
    paired = tables.paired_differences(finished)
    assert [(pair["b"], pair["a"], pair["seed"]) for pair in paired] == [
        ("da_kl", "da", 0),
        ("at_kl", "at", 0),
        ("at_l2", "at", 0),
        ("at_l2", "at_kl", 0),
        ("grn", "da", 0),
    ]
    for pair in paired:
        a, b = bits[pair["a"]], bits[pair["b"]]
        assert pair["difference"] == pytest.approx(b.mean() - a.mean())
        assert (pair["b_only"], pair["a_only"]) == (int(np.sum(b & ~a)), int(np.sum(a & ~b)))
        assert pair["ci"][0] < pair["difference"] < pair["ci"][1]
    lines = tables._paired_lines(paired)
    assert any(line.startswith("| D.A.+KL − D.A. | 0 | ") for line in lines)
    assert tables._paired_lines([]) == []


# The pre-registered confirmatory replication (docs/RESULTS.md).

EVALUATION_FLAGS = {"grid_examples", "grid_subset", "train_eval_examples"}


@pytest.mark.parametrize("row", protocols.SCALES["confirm"].rows)
def test_the_confirmatory_runs_are_the_cpu_regimes_flags_with_seed_2(row):
    """Every training flag, and the evaluation's resampling, as the CPU regime's committed flags.cfg says."""
    recorded = protocols.REPO_ROOT / "docs" / "results" / "cifar10_cpu_regime" / f"{row}_seed0" / "flags.cfg"
    regime = protocols.config_from_flagfile(recorded)
    config = protocols.scale_config("cifar10", row, "confirm", 2, Path("out"), regime.data_dir)
    assert protocols.default_seeds("confirm", row) == (2,) and config.seed == 2
    changed = resume.changed_flags(regime.to_json(), config.to_json())
    assert set(changed) == {"seed", "output_dir"} | EVALUATION_FLAGS
    assert (config.grid_subset, config.train_eval_examples) == (protocols.CONFIRMATION_SET, 2000)
    assert config.eval_resampling == "reference" and config.test_examples == 0


def test_the_confirmation_set_is_balanced_and_disjoint_from_every_earlier_grading(cifar10_dir):
    from benchmarks import confirmation_set

    record = json.loads((protocols.REPO_ROOT / protocols.CONFIRMATION_SET).read_text())
    _, labels, names, _ = data.load_with_names("cifar10", cifar10_dir, "test")
    chosen = report.image_positions(record)
    assert record["sha256"] == report.image_set(chosen, len(labels))["sha256"]
    assert record["names"] == [names[i] for i in chosen]
    np.testing.assert_array_equal(np.bincount(labels[chosen]), np.full(10, 300))
    sources = {
        source: graded
        for source, graded in confirmation_set.graded_by_records(labels, names).items()
        if "cifar10_confirmation" not in source
    }
    assert sources["docs/results/cifar10_cpu_regime/at_seed1"] and len(sources) >= 100
    assert not set(chosen.tolist()) & set().union(*sources.values())
    excluded = set().union(*sources.values())
    np.testing.assert_array_equal(confirmation_set.confirmation_set(labels, excluded, 3000, 2), chosen)


def test_a_recorded_grid_set_is_what_the_run_graded(cifar10_dir):
    """The CPU regime's seed-0 grid images, rebuilt from its flags, are 2,000 balanced ones, not seed 1's."""
    from benchmarks import confirmation_set

    labels = data.load("cifar10", cifar10_dir, "test")[1]
    regime = protocols.REPO_ROOT / "docs" / "results" / "cifar10_cpu_regime"
    seed0, seed1 = (
        confirmation_set.run_graded(protocols.config_from_flagfile(regime / f"at_seed{seed}" / "flags.cfg"), labels)
        for seed in (0, 1)
    )
    assert len(seed0) == len(seed1) == 2000
    assert len(seed0 & seed1) == 401  # the audit's count (../shared/docs/results-audit.md, mismatch 1)
    np.testing.assert_array_equal(np.bincount(labels[sorted(seed0)]), np.full(10, 200))
