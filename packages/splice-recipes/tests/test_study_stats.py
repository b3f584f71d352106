"""The study layer's statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest
from splice_recipes.study import (
    NOT_SHOWN,
    SHOWN,
    Claim,
    judge,
    paired_differences,
    t_interval,
    t_quantile,
    verdict,
)


@pytest.mark.parametrize(
    ("df", "expected"),  # two-sided 95% critical values from a printed t table
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452), (1000, 1.9623)],
)
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_t_interval_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, half-width 4.3027 / sqrt(3)
    assert iv.mean == pytest.approx(2.0)
    assert iv.sd == pytest.approx(1.0)
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (iv.low, iv.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-6)
    assert iv.n == 3 and iv.method == "Student t"
    wide = t_interval([1.0, 2.0, 3.0], confidence=0.99)  # t(0.995, 2) = 9.9248
    assert wide.half_width == pytest.approx(9.9248 / math.sqrt(3), rel=1e-4)


def test_paired_difference_interval_and_verdict_by_hand():
    arm, base = [0.80, 0.85, 0.90], [0.70, 0.74, 0.83]
    d = paired_differences(arm, base)
    assert d == pytest.approx([0.10, 0.11, 0.07])
    iv = t_interval(d)
    # mean 0.09333; sd sqrt(((0.00667)^2 + (0.01667)^2 + (0.02333)^2) / 2) = 0.020817
    assert iv.mean == pytest.approx(0.093333, abs=1e-6)
    assert iv.sd == pytest.approx(0.020817, abs=1e-6)
    assert iv.low == pytest.approx(0.093333 - 0.051712, abs=1e-5)
    assert verdict(iv, "higher") == SHOWN
    assert verdict(iv, "lower") == NOT_SHOWN  # the data go the other way
    # against a margin: the interval [0.0416, 0.1450] clears 0.04 but not 0.05
    assert verdict(iv, "higher", 0.04) == SHOWN and verdict(iv, "higher", 0.05) == NOT_SHOWN
    # non-inferiority: "arm loses at most 0.1" holds for a difference near zero
    flat = t_interval([-0.02, 0.01, 0.0])  # mean -0.00333, interval about [-0.0413, +0.0346]
    assert verdict(flat, "higher") == NOT_SHOWN and verdict(flat, "higher", -0.1) == SHOWN
    assert verdict(flat, "higher", -0.04) == NOT_SHOWN
    assert verdict(flat, "lower", 0.04) == SHOWN and verdict(flat, "lower", 0.03) == NOT_SHOWN


def test_an_interval_that_straddles_zero_reads_not_shown():
    # seeds disagree: +0.05, -0.02, +0.04 -> mean 0.0233, interval [-0.0715, 0.1182]
    iv = t_interval(paired_differences([0.75, 0.70, 0.74], [0.70, 0.72, 0.70]))
    assert iv.low < 0 < iv.high
    assert iv.low == pytest.approx(0.023333 - 4.302653 * 0.037859 / math.sqrt(3), abs=1e-5)
    assert verdict(iv, "higher") == NOT_SHOWN
    assert verdict(iv, "lower") == NOT_SHOWN


def test_one_seed_has_no_interval_and_is_never_shown():
    iv = t_interval([0.5])
    assert iv.mean == 0.5 and math.isinf(iv.low) and math.isinf(iv.high)
    assert verdict(iv, "higher") == NOT_SHOWN


def test_one_sample_claim_against_a_number():
    d = paired_differences([0.40, 0.45, 0.50], 1 / 3)  # accuracy against chance
    assert d == pytest.approx([0.0667, 0.1167, 0.1667], abs=1e-4)
    figures = {"clip": {0: {"acc": 0.40}, 1: {"acc": 0.45}, 2: {"acc": 0.50}}}
    cr = judge(Claim("above-chance", "clip", 1 / 3, "acc"), figures, [0, 1, 2], 0.95)
    assert cr.baseline_values is None
    # mean 0.11667, sd 0.05, half-width 4.3027 * 0.05 / sqrt(3) = 0.12421
    assert cr.interval.low == pytest.approx(0.116667 - 0.124206, abs=1e-5)
    assert cr.verdict == NOT_SHOWN


def test_lower_is_better_claim_is_judged_on_the_lower_side():
    figures = {
        "moe": {0: {"loss": 1.0}, 1: {"loss": 1.1}, 2: {"loss": 0.9}},
        "dense": {0: {"loss": 1.2}, 1: {"loss": 1.25}, 2: {"loss": 1.15}},
    }
    cr = judge(Claim("moe-lower", "moe", "dense", "loss", "lower"), figures, [0, 1, 2], 0.95)
    assert cr.differences == pytest.approx([-0.2, -0.15, -0.25])
    assert cr.interval.high < 0 and cr.verdict == SHOWN


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_differences([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        t_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="direction"):
        Claim("x", "a", "b", "m", "up")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no metric 'acc'"):
        judge(Claim("x", "a", 0.0, "acc"), {"a": {0: {"loss": 1.0}}}, [0], 0.95)
