"""benchmarks.g_capacity: the width that matches the paper's capacity ratio, and the projection's inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import g_capacity
from benchmarks.common import protocols
from invariance_tf.networks import cost


def test_capacity_width_is_the_nearest_to_the_papers_ratio() -> None:
    width = g_capacity.capacity_width()
    target = g_capacity.PAPER_RATIO * g_capacity.RESNET9_WIDTH16
    counts = {w: cost.parameter_count(g_capacity.g_resnet9(w)) for w in (width - 1, width, width + 1)}
    assert min(counts, key=lambda w: abs(counts[w] - target)) == width
    assert abs(counts[width] / target - 1) < 0.05


def test_fair_width_is_the_fair_rows() -> None:
    assert cost.parameter_count(g_capacity.g_resnet9(g_capacity.FAIR_WIDTH)) == 410_678


def test_bad_flags_are_named() -> None:
    with pytest.raises(ValueError, match="rounds"):
        g_capacity.CapacityOptions(rounds=0).validate()


def test_the_capacity_row_trains_the_chosen_width_like_the_fair_row() -> None:
    assert protocols.CAPACITY_WIDTH == g_capacity.capacity_width()
    wide = protocols.scale_config("cifar10", "grn", "cpu_regime_grn_capacity", 0, Path("out"), None)
    fair = protocols.scale_config("cifar10", "grn", "cpu_regime_grn_flatten", 0, Path("out"), None)
    assert (wide.width, wide.group, wide.g_head) == (protocols.CAPACITY_WIDTH, "p4m", "flatten")
    assert {"width"} == {name for name, value in vars(wide).items() if value != vars(fair)[name]} - {"output_dir"}
