"""`--precision=auto`: bfloat16 only where the hardware computes it natively, whatever CPU runs the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import protocols, tables
from invariance_tf import experiment_config, precision, resume

# Feature sets of the machine kinds seen here (abridged /proc/cpuinfo flags).
AVX2_EPYC = {"sse4_2", "avx", "avx2", "fma", "f16c"}
ZEN4_EPYC = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = AVX2_EPYC | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
AVX512_WITHOUT_BF16 = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
GRAVITON3 = {"fp", "asimd", "sve", "bf16", "i8mm"}


@pytest.mark.parametrize(
    "features, policy",
    [
        (AVX2_EPYC, "float32"),
        (AVX512_WITHOUT_BF16, "float32"),
        (set(), "float32"),
        (ZEN4_EPYC, "mixed_bfloat16"),
        (SAPPHIRE_RAPIDS, "mixed_bfloat16"),
        (GRAVITON3, "mixed_bfloat16"),
    ],
)
def test_auto_picks_bfloat16_only_on_cpus_that_compute_it_natively(features, policy):
    choice = precision.choose("auto", features)
    assert choice.policy == policy
    assert choice.reason.startswith("auto: ")


@pytest.mark.parametrize(
    "gpus, policy",
    [
        ([(8, 0)], "mixed_bfloat16"),
        ([(9, 0), (8, 6)], "mixed_bfloat16"),
        ([(7, 0)], "float32"),
        ([(8, 0), (7, 5)], "float32"),
    ],
)
def test_auto_on_gpus_needs_bfloat16_on_every_one_whatever_the_cpu(gpus, policy):
    assert precision.choose("auto", ZEN4_EPYC, gpus).policy == policy
    assert precision.choose("auto", AVX2_EPYC, gpus).policy == policy


@pytest.mark.parametrize("policy", precision.POLICIES)
def test_an_explicit_policy_wins_on_any_hardware(policy):
    for features in (AVX2_EPYC, ZEN4_EPYC):
        assert precision.choose(policy, features) == (policy, "given")


def test_an_unknown_precision_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"--precision=bf16 is invalid: valid values are \['auto', 'float32'"):
        precision.choose("bf16", ZEN4_EPYC)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "processor\t: 0\nflags\t\t: fpu sse avx2 AVX512_BF16\nbugs\t\t: none\n",
            {"fpu", "sse", "avx2", "avx512_bf16"},
        ),
        ("processor\t: 0\nFeatures\t: fp asimd bf16\n", {"fp", "asimd", "bf16"}),
        ("processor\t: 0\n", set()),
    ],
)
def test_cpu_features_are_read_from_x86_and_arm_cpuinfo(tmp_path, text, expected):
    (tmp_path / "cpuinfo").write_text(text)
    assert precision.cpu_features(tmp_path / "cpuinfo") == expected


def test_no_cpuinfo_means_no_features(tmp_path):
    assert precision.cpu_features(tmp_path / "missing") == frozenset()


def test_the_cpu_recipe_trains_in_float32_on_an_avx2_only_cpu_without_being_told(tmp_path):
    for row in ("std", "at", "at_kl"):
        config = protocols.scale_config("cifar10", row, "cpu", 0, tmp_path, None)
        assert config.precision == "auto"
        assert precision.choose(config.precision, AVX2_EPYC).policy == "float32"
        assert precision.choose(config.precision, ZEN4_EPYC).policy == "mixed_bfloat16"


def test_the_config_accepts_auto_and_names_the_choices_when_wrong(cifar10_dir):
    experiment_config.ExperimentConfig(precision="auto", data_dir=str(cifar10_dir)).validate()
    with pytest.raises(ValueError, match=r"--precision=half is invalid: valid values are \['auto'"):
        experiment_config.ExperimentConfig(precision="half").validate()


def test_a_table_footer_shows_each_runs_precision():
    by_run = {"std_seed0": "float32", "at_seed0": "mixed_bfloat16", "at_kl_seed0": "float32"}
    assert tables._precisions(by_run) == "float32: std_seed0, at_kl_seed0; mixed_bfloat16: at_seed0"


def test_this_machine_is_described_with_its_precision_features():
    description = precision.describe_machine()
    assert "features:" in description
    if Path("/proc/cpuinfo").is_file():
        assert precision.cpu_model() in description


def test_a_resumed_run_keeps_the_precision_it_started_with(tmp_path, monkeypatch):
    config = experiment_config.ExperimentConfig(precision="auto")
    monkeypatch.setattr(precision, "resolve", lambda name: precision.choose(name, ZEN4_EPYC))
    started = resume.run_precision(config, tmp_path)
    assert started.policy == "mixed_bfloat16"
    monkeypatch.setattr(resume.callbacks, "latest_backup", lambda folder: folder / "epoch-3")
    monkeypatch.setattr(precision, "resolve", lambda name: precision.choose(name, AVX2_EPYC))
    assert resume.run_precision(config, tmp_path) == started
    monkeypatch.setattr(resume.callbacks, "latest_backup", lambda folder: None)
    assert resume.run_precision(config, tmp_path).policy == "float32"
