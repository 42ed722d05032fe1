"""Paired comparisons of two runs on the same examples, and the compact per-example record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from invariance_tf import report


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
    expected = 2 * sum(math.comb(10, i) for i in range(3)) / 2 ** 10
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
    assert high - low < 0.5 * min(h - l for l, h in unpaired)
    exact = np.sqrt(80 / 2000 - (40 / 2000) ** 2) / np.sqrt(2000) * 1.96
    assert (high - low) / 2 == pytest.approx(exact, rel=0.15)


@pytest.mark.parametrize("a, b, message", [
    (np.ones(3, bool), np.ones(4, bool), "equally long"),
    (np.ones(0, bool), np.ones(0, bool), "non-empty"),
])
def test_mismatched_outcomes_are_refused(a, b, message):
    with pytest.raises(ValueError, match=message):
        report.paired_difference(a, b)


def test_mcnemar_stays_exact_with_thousands_of_discordant_examples():
    a = np.array([True] * 500 + [False] * 600)
    result = report.paired_difference(a, ~a, resamples=100)
    assert (result["b_only"], result["a_only"]) == (600, 500)
    assert 0.002 < result["mcnemar_p"] < 0.004
