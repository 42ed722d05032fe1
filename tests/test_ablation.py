"""The A.T. vs A.T.+KL ablation: shared runs train once, the pairs are graded on the same images, it resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import ablation
from benchmarks.common import cli
from invariance_tf import report


@pytest.fixture(scope="module")
def smoke_ablation(tmp_path_factory, cifar10_dir):
    out = tmp_path_factory.mktemp("ablation")
    results = ablation.ablation("smoke", out, str(cifar10_dir), ["base", "shared_candidates"], [0])
    return out, results


def test_a_run_shared_by_factors_trains_once(smoke_ablation):
    out, _ = smoke_ablation
    assert sorted(path.name for path in out.glob("*_seed0")) == [
        "at__base_seed0",
        "at_kl__base_seed0",
        "at_kl__shared_candidates=true_seed0",
    ]
    shared = json.loads((out / "at_kl__shared_candidates=true_seed0" / "config.json").read_text())
    assert shared["shared_candidates"] is True


def test_the_paired_difference_is_over_the_same_test_images(smoke_ablation):
    out, results = smoke_ablation
    for factor, run in (("base", "at_kl__base_seed0"), ("shared_candidates", "at_kl__shared_candidates=true_seed0")):
        at = json.loads((out / "at__base_seed0" / "metrics.json").read_text())
        at_kl = json.loads((out / run / "metrics.json").read_text())
        pair = results["factors"][factor]["0"]
        expected = report.from_bits(at_kl["grid_correct"]).mean() - report.from_bits(at["grid_correct"]).mean()
        assert pair["grid_difference"]["difference"] == pytest.approx(expected)
        assert pair["grid_difference"]["examples"] == len(at["grid_correct"]) == 20
        assert np.isclose(pair["at"]["grid"], at["grid_accuracy"])
        assert 0 <= pair["at_kl"]["train_accuracy"] <= 1
    table = (out / "ablation.md").read_text()
    assert "| base | 0 |" in table and "| shared_candidates | 0 |" in table


def test_the_gap_change_is_the_factors_difference_of_differences_per_example(smoke_ablation):
    """Both pairs share A.T., so the change of A.T.+KL − A.T. is A.T.+KL(shared) − A.T.+KL(base), example by example."""
    out, results = smoke_ablation
    kl_base, kl_shared = (
        report.from_bits(json.loads((out / run / "metrics.json").read_text())["grid_correct"]).astype(float)
        for run in ("at_kl__base_seed0", "at_kl__shared_candidates=true_seed0")
    )
    change = results["factors"]["shared_candidates"]["0"]["gap_change"]
    assert change["difference"] == pytest.approx((kl_shared - kl_base).mean())
    assert change["ci"][0] <= change["difference"] <= change["ci"][1]
    assert "gap_change" not in results["factors"]["base"]["0"]
    assert report.bootstrap_interval(np.full(50, 0.25)) == (0.25, 0.25)


def test_a_rerun_reads_the_finished_runs(smoke_ablation, capsys, cifar10_dir):
    out, results = smoke_ablation
    again = ablation.ablation("smoke", out, str(cifar10_dir), ["base"], [0])
    assert "training" not in capsys.readouterr().out
    assert again["factors"]["base"] == results["factors"]["base"]


def test_an_unknown_factor_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(SystemExit) as refused:
        cli.parse(ablation.AblationOptions, ["--out", str(tmp_path), "--factors", "base,lambda_99"])
    assert str(refused.value) == (
        f"error: --factors=base,lambda_99 is invalid: unknown ['lambda_99']; valid factors are {list(ablation.FACTORS)}"
    )
