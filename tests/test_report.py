"""Paired comparisons on the same examples, the compact per-example record, examples.csv and the failure sheet."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from PIL import Image

from invariance_tf import plots, report, transforms
from invariance_tf.evaluation import RobustResult


def test_bits_round_trip_and_refuse_other_characters():
    correct = np.array([True, False, False, True, True])
    assert report.bits(correct) == "10011"
    np.testing.assert_array_equal(report.from_bits("10011"), correct)
    with pytest.raises(ValueError, match="string of 0 and 1"):
        report.from_bits("10a1")


def test_mcnemar_is_the_exact_two_sided_binomial_test_on_discordant_pairs():
    a = np.array([False] * 8 + [True] * 2 + [True] * 30)
    b = np.array([True] * 8 + [False] * 2 + [True] * 30)
    result = report.paired_difference(a, b)
    assert (result["b_only"], result["a_only"], result["examples"]) == (8, 2, 40)
    expected = 2 * sum(math.comb(10, i) for i in range(3)) / 2**10
    assert result["mcnemar_p"] == pytest.approx(expected)
    assert result["difference"] == pytest.approx(6 / 40)


def test_identical_outcomes_differ_by_exactly_zero():
    a = np.random.default_rng(0).random(500) < 0.6
    result = report.paired_difference(a, a)
    assert result["difference"] == 0 and result["ci"] == [0.0, 0.0] and result["mcnemar_p"] == 1.0


def test_the_paired_interval_is_far_tighter_than_two_unpaired_ones():
    """Two models that agree on most examples: b fixes 60 of a's 800 mistakes and breaks 20 of its successes."""
    rng = np.random.default_rng(1)
    a = rng.random(2000) < 0.6
    b = a.copy()
    b[rng.choice(np.flatnonzero(~a), 60, replace=False)] = True
    b[rng.choice(np.flatnonzero(a), 20, replace=False)] = False
    result = report.paired_difference(a, b, seed=3)
    low, high = result["ci"]
    assert result["difference"] == pytest.approx(40 / 2000) and low < result["difference"] < high
    assert low > 0
    unpaired = [report.wilson_interval(int(x.sum()), len(x)) for x in (a, b)]
    assert high - low < 0.5 * min(upper - lower for lower, upper in unpaired)
    exact = np.sqrt(80 / 2000 - (40 / 2000) ** 2) / np.sqrt(2000) * 1.96
    assert (high - low) / 2 == pytest.approx(exact, rel=0.15)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (np.ones(3, bool), np.ones(4, bool), "equally long"),
        (np.ones(0, bool), np.ones(0, bool), "non-empty"),
    ],
)
def test_mismatched_outcomes_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        report.paired_difference(a, b)


def test_mcnemar_stays_exact_with_thousands_of_discordant_examples():
    a = np.array([True] * 500 + [False] * 600)
    result = report.paired_difference(a, ~a, resamples=100)
    assert (result["b_only"], result["a_only"]) == (600, 500)
    assert 0.002 < result["mcnemar_p"] < 0.004


def test_worst_failures_are_the_most_negative_margins_among_failures_only():
    correct = np.array([True, False, False, True, False, False, False])
    margin = np.array([-9.0, -0.5, -3.0, -8.0, -3.0, 0.0, -7.0])
    np.testing.assert_array_equal(report.worst_failures(correct, margin, 3), [6, 2, 4])
    np.testing.assert_array_equal(report.worst_failures(correct, margin, 10), [6, 2, 4, 1, 5])
    assert report.worst_failures(np.ones(4, bool), -np.ones(4), 2).size == 0
    with pytest.raises(ValueError, match="count must be >= 1; got 0"):
        report.worst_failures(correct, margin, 0)
    with pytest.raises(ValueError, match=r"shapes \(7,\) and \(6,\)"):
        report.worst_failures(correct, margin[:6], 2)


def test_examples_csv_names_each_row_after_the_example_index(tmp_path):
    grid = RobustResult(
        0.5,
        np.array([True, False]),
        np.array([[0, 0, 0], [1, -2, 30]], np.float32),
        margin=np.array([1.5, -2.25], np.float32),
    )
    names = ["test/cat/0042.png", "test/dog/0007.png"]
    report.write_examples_csv(tmp_path / "examples.csv", np.array([3, 5]), {"grid": grid}, names)
    with open(tmp_path / "examples.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["example", "image", "label", "grid_correct", "grid_dx", "grid_dy", "grid_angle", "grid_margin"]
    assert rows[1:] == [
        ["0", "test/cat/0042.png", "3", "1", "0", "0", "0", "1.5"],
        ["1", "test/dog/0007.png", "5", "0", "1", "-2", "30", "-2.25"],
    ]
    with pytest.raises(ValueError, match="names has 1 entries; labels has 2"):
        report.write_examples_csv(tmp_path / "bad.csv", np.array([3, 5]), {"grid": grid}, names[:1])


def test_failure_sheet_is_a_png_of_four_tiles_a_row(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    params = np.array([[1, -2, 30], [0, 0, -4], [3, 3, 0], [-1.5, 0.75, 12], [0, -3, -30]], np.float32)
    moved = transforms.transform(images.astype(np.float32), params).numpy()
    names = [f"test/cat/{index:04d}.png" for index in range(5)]
    plots.failure_sheet(
        images,
        moved,
        params,
        ["cat"] * 5,
        ["dog"] * 5,
        -np.arange(1.0, 6.0),
        names,
        tmp_path / "failures.png",
        title="5 failures",
    )
    with Image.open(tmp_path / "failures.png") as sheet:
        sheet.verify()
        assert sheet.format == "PNG"
    with Image.open(tmp_path / "failures.png") as sheet:
        assert sheet.size == (round(4 * 2.8 * 120), round((2 * 2.0 + 0.3) * 120))
    with pytest.raises(ValueError, match=r"one equal, non-zero length; got \[5, 5, 5, 5, 4, 5, 5\]"):
        plots.failure_sheet(
            images, moved, params, ["cat"] * 5, ["dog"] * 4, np.zeros(5), ["x"] * 5, tmp_path / "bad.png"
        )


def test_an_image_set_names_its_positions_and_its_digest_tells_sets_apart():
    positions = np.array([3, 7, 42])
    record = report.image_set(positions, 100)
    assert (record["count"], record["of"], record["indices"]) == (3, 100, "3,7,42")
    np.testing.assert_array_equal(report.image_positions(record), positions)
    whole = report.image_set(np.arange(5), 5)
    assert whole["indices"] == "all"
    np.testing.assert_array_equal(report.image_positions(whole), np.arange(5))
    assert report.image_set(np.array([3, 7, 43]), 100)["sha256"] != record["sha256"]
    assert report.image_set(positions.copy(), 100) == record


def test_pairs_graded_on_other_images_are_refused_with_one_line():
    a = {"grid_correct": "101", "grid_images": report.image_set(np.array([1, 2, 3]), 10)}
    same = {"grid_correct": "011", "grid_images": report.image_set(np.array([1, 2, 3]), 10)}
    other = {"grid_correct": "011", "grid_images": report.image_set(np.array([1, 2, 4]), 10)}
    report.check_paired(a, same)
    with pytest.raises(ValueError, match=r"^cannot pair A and B: they graded different test images"):
        report.check_paired(a, other, ("A", "B"))
    with pytest.raises(ValueError, match="graded 3 and 2 test images"):
        report.check_paired({"grid_correct": "101"}, {"grid_correct": "01"})
    report.check_paired({"grid_correct": "101"}, same)
