"""Advantage estimators on a hand-computed example: two groups of G = 4,
rewards [1, 0, 0, 1] (mean 0.5, sample std sqrt(1/3)) and [2, 2, 2, 2] (all equal)."""

from __future__ import annotations

import math

import pytest
import torch

from .conftest import build as build_component

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])


def build(cfg):
    return build_component("advantage_estimator", cfg)


def test_group_normalised_grpo():
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # 0.86588...
    got = build({"type": "group_norm"})(REWARDS, 4)
    assert got.tolist() == pytest.approx([a, -a, -a, a, 0, 0, 0, 0], abs=1e-6)


def test_dr_grpo_skips_the_std():
    got = build({"type": "group_norm", "scale_by_std": False})(REWARDS, 4)
    assert got.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0], abs=1e-7)


def test_rloo_leave_one_out():
    # r=1: the others are {0, 0, 1}, mean 1/3 -> 2/3; r=0: others {1, 0, 1} -> -2/3
    got = build({"type": "rloo"})(REWARDS, 4)
    t = 2 / 3
    assert got.tolist() == pytest.approx([t, -t, -t, t, 0, 0, 0, 0], abs=1e-6)


def test_reinforce_pp_normalises_over_the_batch():
    # batch mean 1.25; deviations -0.25, -1.25, 0.75; sample variance 5.5 / 7
    std = math.sqrt(5.5 / 7)
    want = [d / (std + 1e-8) for d in (-0.25, -1.25, -1.25, -0.25, 0.75, 0.75, 0.75, 0.75)]
    got = build({"type": "reinforce_pp"})(REWARDS, 4)
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    assert float(got.mean()) == pytest.approx(0.0, abs=1e-6)


def test_reinforce_pp_with_group_baseline():
    # centred by group: [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]; mean 0; sample var 1 / 7
    std = math.sqrt(1 / 7)
    want = [x / (std + 1e-8) for x in (0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0)]
    got = build({"type": "reinforce_pp", "group_baseline": True})(REWARDS, 4)
    assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_rewards_that_do_not_split_into_groups_are_an_error():
    with pytest.raises(ValueError, match=r"shape \(7,\) do not split into groups of 4"):
        build({"type": "group_norm"})(REWARDS[:7], 4)


def test_the_01_call_still_works_and_warns():
    """``estimator(rewards, group_size)`` (0.1) gives the same advantages, with a warning."""
    from splice.registry import get_registry
    from splice_grpo.configs import GroupNormConfig

    est = get_registry().build("advantage_estimator", GroupNormConfig(), None)
    with pytest.warns(DeprecationWarning, match=r"AdvantageInputs"):
        old = est(REWARDS, 4)
    assert torch.equal(old, build({"type": "group_norm"})(REWARDS, 4))
