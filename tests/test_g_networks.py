"""The GRN rows' networks: the full-scale flagfiles build Cohen & Welling's p4m G-ResNet44, G-ResNet-9 matches ResNet-9.

Parameters are counted as Cohen & Welling's Chainer code holds them (`Link.params()`): conv kernels and biases, batch
norm gamma and beta, the linear layer; batch norm moving statistics are state, not parameters, so trainable weights
in Keras. Their README gives 2.62M for p4m ResNet44; a recount of P4MResNet.py gives 2,622,878 exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from benchmarks import g_row_selection
from benchmarks.common import protocols
from invariance_tf import builders, data, experiment_config, networks
from invariance_tf.evaluation import reporting, symmetry
from invariance_tf.evaluation.options import EvaluateOptions
from invariance_tf.networks import cost
from invariance_tf.networks.g_resnet9 import g_resnet9

COHEN_P4M_RESNET44 = 2_622_878  # P4MResNet(num_blocks=7, nc32=11, nc16=23, nc8=45), BN gamma/beta included
ISSUE_P4M_RESNET44 = 2_619_728  # issue #35's count: the same network with the group-pooled head
RESNET9_WIDTH16 = 412_954


def trainable_count(model: keras.Model) -> int:
    """Kernels, biases and batch norm gamma / beta: what Chainer's `params()` counts."""
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize("dataset,classes", [("cifar10", 10), ("svhn", 10), ("cifar100", 100)])
def test_full_scale_grn_flagfile_builds_cohen_p4m_resnet44(dataset: str, classes: int) -> None:
    config = protocols.config_from_flagfile(protocols.row_flagfile(dataset, "grn"))
    assert (config.network, config.g_depth, config.group, config.g_head) == ("g_resnet", 44, "p4m", "flatten")
    network = builders.build_network(config, data.dataset_info(config.dataset))
    count = trainable_count(network)
    head_difference = 45 * 8 * (classes - 10) + (classes - 10)
    assert count == COHEN_P4M_RESNET44 + head_difference
    if classes == 10:
        assert abs(count / ISSUE_P4M_RESNET44 - 1) < 0.005
        assert round(count / 1e6, 2) == 2.62  # Cohen & Welling's README


@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("head", ["invariant", "flatten"])
def test_g_resnet9_matches_resnet9_width16_within_5_percent(group: str, head: str) -> None:
    assert trainable_count(networks.build("resnet9", width=16)) == RESNET9_WIDTH16
    count = trainable_count(g_resnet9(16, group, head))
    print(f"\nG-ResNet-9 {group} {head}: {count:,} ({count / RESNET9_WIDTH16 - 1:+.2%} of ResNet-9 width 16)")
    assert abs(count / RESNET9_WIDTH16 - 1) < 0.05


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_g_resnet9_invariant_head_is_invariant_at_32(group: str) -> None:
    """Stride-1 convs and 2x2 pools on sides divisible by 8 commute with quarter-turns and flips."""
    keras.utils.set_random_seed(3)
    model = g_resnet9(4, group, "invariant", input_shape=(None, None, 3))
    x = np.random.default_rng(3).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
    reference = np.asarray(model(x, training=False))
    turns = [np.rot90(x, k, axes=(1, 2)) for k in (1, 2, 3)] + ([x[:, ::-1], x[:, :, ::-1]] if group == "p4m" else [])
    for turned in turns:
        np.testing.assert_allclose(
            model(np.ascontiguousarray(turned), training=False),
            reference,
            rtol=1e-4,
            atol=1e-4 * np.abs(reference).max(),
        )


def test_g_resnet9_flagfile_flags_build_it() -> None:
    config = experiment_config.ExperimentConfig(network="g_resnet9", width=16, group="p4m", g_head="flatten")
    network = builders.build_network(config, data.dataset_info("cifar10"))
    assert trainable_count(network) == 410_678


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: g_resnet9(head="pooled"), "valid heads are"),
        (lambda: g_resnet9(group="c4"), "valid groups are"),
        (lambda: g_resnet9(width=0), "got 0"),
        (lambda: g_resnet9(widths=(4, 8, 16)), "got \\(4, 8, 16\\)"),
    ],
)
def test_invalid_arguments_name_the_bad_value(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_cost_counts_parameters_and_macs_per_image() -> None:
    """Issue #35's table: ResNet-9 width 16 24.0 MMACs, ResNet-32 68.9, Cohen's p4m G-ResNet44 3,070."""
    expected = {
        "resnet9": (networks.build("resnet9", width=16), RESNET9_WIDTH16, 24_036_608),
        "resnet32": (networks.build("resnet", n=5), 464_154, 68_862_592),
        "p4m_resnet44": (networks.build("g_resnet", group="p4m", head="flatten"), COHEN_P4M_RESNET44, 3_069_943_312),
    }
    for name, (network, parameters, macs) in expected.items():
        assert (cost.parameter_count(network), cost.macs_per_image(network)) == (parameters, macs), name


NETWORK_FIELDS = {"network", "width", "group", "g_head", "output_dir"}


G_ROW_SCALES = {  # each G-row protocol -> (seed, head, width)
    **{f"cpu_regime_grn_{head}": (0, head, 16) for head in ("invariant", "flatten")},
    **{f"confirm_grn_{head}": (2, head, 16) for head in ("invariant", "flatten")},
    "cpu_regime_grn_capacity": (0, "flatten", protocols.CAPACITY_WIDTH),
}


@pytest.mark.parametrize("scale", sorted(G_ROW_SCALES))
def test_g_rows_train_exactly_like_the_da_runs_they_pair_with(scale: str) -> None:
    seed, head, width = G_ROW_SCALES[scale]
    grn = protocols.scale_config("cifar10", "grn", scale, seed, Path("out"), None)
    if seed == 0:  # the CPU regime's D.A.
        da = protocols.scale_config("cifar10", "da", "cpu", 0, Path("out"), None, epochs=24, train_examples=25_000)
    else:  # the confirmatory replication's D.A.
        da = protocols.scale_config("cifar10", "da", "confirm", 2, Path("out"), None)
    differing = {
        field.name
        for field in dataclasses.fields(grn)
        if getattr(grn, field.name) != getattr(da, field.name) and field.name not in NETWORK_FIELDS
    }
    # The grn flagfile's unused G-ResNet44 flags and D.A.'s unused ResNet flags differ; neither network reads them.
    # The learning rate and weight decay are the selection's choice (the next test).
    assert differing <= {"g_depth", "resnet_n", "reference_resnet", "lr", "weight_decay"}, differing
    assert (grn.seed, grn.network, grn.width, grn.group, grn.g_head) == (seed, "g_resnet9", width, "p4m", head)


@pytest.mark.parametrize("scale", sorted(G_ROW_SCALES))
def test_fair_g_row_takes_the_choice_the_selection_record_made(scale: str) -> None:
    record = json.loads((protocols.REPO_ROOT / "docs/results/cifar10_grn_selection/selection.json").read_text())
    candidates = record["heads"][protocols.SELECTION_HEAD]["candidates"]
    chosen = record["heads"][protocols.SELECTION_HEAD]["chosen"]
    assert len(candidates) == len(protocols.SELECTION_GRID["lr"]) * len(protocols.SELECTION_GRID["weight_decay"])
    best = max(candidates, key=lambda scores: (scores["robust"], scores["clean"]))
    assert (best["lr"], best["weight_decay"]) == (chosen["lr"], chosen["weight_decay"])
    config = protocols.scale_config("cifar10", "grn", scale, 0, Path("out"), None)
    assert (config.lr, config.weight_decay) == (chosen["lr"], chosen["weight_decay"])


def test_selection_runs_hold_out_a_validation_split_and_validate_at_the_end(cifar10_dir) -> None:
    options = g_row_selection.SelectionOptions(out="sel", data_dir=str(cifar10_dir))
    config = g_row_selection.candidate_config("flatten", 0.2, 1e-3, options)
    assert (config.lr, config.weight_decay, config.train_examples) == (0.2, 1e-3, 25_000)
    assert config.validation_examples == protocols.SELECTION_VALIDATION_EXAMPLES
    assert config.eval_every == config.epochs == 24
    config.validate()


def tiny_g_resnet(head: str) -> keras.Model:
    """Depth-8 p4m G-ResNet with 2/3/4 G-channels at 32x32, as trainers.fit builds it, with random BN statistics."""
    keras.utils.set_random_seed(5)
    model = networks.build("g_resnet", depth=8, group="p4m", widths=(2, 3, 4), head=head)
    rng = np.random.default_rng(5)
    for weight in model.non_trainable_weights:
        weight.assign(rng.uniform(0.5, 1.5, size=weight.shape).astype(np.float32))
    return model


def test_symmetry_diagnostic_separates_exact_and_approximate_invariance(cifar10_test_slice) -> None:
    images = cifar10_test_slice[0][:8]
    exact = symmetry.logit_drift(tiny_g_resnet("invariant"), images, "p4m", side=33)
    padded_asymmetrically = symmetry.logit_drift(tiny_g_resnet("invariant"), images, "p4m")
    not_invariant = symmetry.logit_drift(tiny_g_resnet("flatten"), images, "p4m", side=33)
    changes = [run["max_relative_change"] for run in (exact, padded_asymmetrically, not_invariant)]
    print(
        "\nmax relative logit change: invariant head 33x33 {:.1e}, 32x32 {:.1e}; flatten head 33x33 {:.1e}".format(
            *changes
        )
    )
    assert set(exact["transforms"]) == set(symmetry.TRANSFORMS)
    assert exact["max_relative_change"] < 1e-4
    assert padded_asymmetrically["max_relative_change"] > 1e-3
    assert not_invariant["max_relative_change"] > 1e-3


@pytest.mark.parametrize("source", ["model_dir", "model"])
def test_trainers_evaluate_reports_the_symmetry_diagnostic(tmp_path, cifar10_dir, source: str) -> None:
    config = experiment_config.ExperimentConfig(network="g_resnet9", width=2, group="p4", data_dir=str(cifar10_dir))
    network = builders.build_network(config, data.dataset_info("cifar10"))
    network.save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps(config.to_json()))
    given = (
        {"model_dir": str(tmp_path)}
        if source == "model_dir"
        else {"model": str(tmp_path / "model.keras"), "data_dir": str(cifar10_dir), "output_dir": str(tmp_path)}
    )
    options = EvaluateOptions(**given, attack=("clean",), examples=20, symmetry="p4")
    options.validate()
    reporting.run(options)
    report = json.loads((tmp_path / "evaluation.json").read_text())["symmetry"]
    assert (report["group"], report["side"], report["examples"]) == ("p4", 32, 20)
    assert report["max_relative_change"] < 1e-4  # G-ResNet-9's invariant head is exact at 32x32
    initial = report["initial"]
    assert (initial["group"], initial["side"]) == ("p4", 32)
    assert initial["max_relative_change"] < 1e-4


def test_initialised_copy_is_the_architecture_with_fresh_weights() -> None:
    network = tiny_g_resnet("flatten")
    fresh = symmetry.initialised_copy(network, seed=3)
    again = symmetry.initialised_copy(network, seed=3)
    assert [w.shape for w in fresh.weights] == [w.shape for w in network.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), network.get_weights(), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), again.get_weights(), strict=True))


def test_symmetry_needs_a_keras_network(tmp_path) -> None:
    (tmp_path / "m.onnx").write_text("")
    with pytest.raises(ValueError, match=r"--symmetry=p4m needs --model_dir or a Keras file .* got --model=.*m\.onnx"):
        EvaluateOptions(model=str(tmp_path / "m.onnx"), symmetry="p4m").validate()
