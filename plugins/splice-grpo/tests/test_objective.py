"""The GRPO objective end to end on a tiny decoder: experience layout, the importance ratio
is exactly 1 on the first inner iteration, equal-reward groups reported and filtered,
beta = 0 skips the reference, bad inputs fail naming the value, and GRPO raises a reward."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytest
import torch
from pydantic import ValidationError
from splice.config import ComponentConfig
from splice.generation.sampling import SamplingConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.rewards import RewardError
from splice.rl.rollout import Rollouts
from splice_grpo.configs import GRPOConfig
from splice_grpo.objective import GRPOObjective

from .conftest import TOK, prompt_batch, tiny_model

# reward = minus the completion's length: varies within a group, so advantages are non-zero
LENGTH = {"reward": {"type": "length_penalty", "target": 0, "scale": 1.0}}


def objective(**kw) -> GRPOObjective:
    cfg = GRPOConfig.model_validate({"type": "grpo", "rewards": [LENGTH], **kw})
    return get_registry().build("objective", cfg, None)


def generator(max_new_tokens=6, seed=0):
    return Rollouts(
        SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0), TOK, seed=seed
    ).generator(0)


def test_experience_layout_and_metrics():
    model = tiny_model()
    obj = objective(group_size=4, beta=0.1)
    obj.setup(model)
    exp = obj.collect(model, prompt_batch(3), generator())
    n = 12
    assert exp["input_ids"].shape[0] == n and exp["completion_mask"].shape == exp["input_ids"].shape
    assert exp["advantages"].shape == (n,) and exp["ref_logprobs"].shape == (
        n,
        exp["input_ids"].shape[1] - 1,
    )
    assert "old_logprobs" not in exp  # one update per rollout: log π_old is log π detached
    # length_penalty (target 0, scale 1) counts characters: the completion's non-special tokens
    ids, cm = exp["input_ids"], exp["completion_mask"]
    rewards = -torch.stack([(ids[i][cm[i]] > 2).sum() for i in range(n)]).float()
    torch.testing.assert_close(exp["rewards"], rewards)
    g = rewards.view(3, 4)
    want = ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + 1e-4)).flatten()
    torch.testing.assert_close(exp["advantages"], want)
    m = exp["metrics"]
    assert m["reward"] == pytest.approx(float(rewards.mean()))
    assert m["reward/length_penalty"] == pytest.approx(float(rewards.mean()))
    assert m["completion_length"] == pytest.approx(float(exp["lengths"].float().mean()))
    out = obj.loss(model, next(obj.minibatches(exp)))
    assert out.loss.requires_grad and out.n_tokens == n
    assert out.metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at start
    assert out.metrics["ratio_max"] == 1.0 == out.metrics["ratio_min"]


def test_ratio_is_exactly_one_on_the_first_inner_iteration():
    """mu = 2 inner iterations, 2 minibatches: log π_old comes from a stored forward pass; on
    the first iteration (before any update) each minibatch's ratio must be exactly 1."""
    model = tiny_model()
    obj = objective(group_size=4, beta=0.0, inner_iterations=2, minibatches=2)
    obj.setup(model)
    exp = obj.collect(model, prompt_batch(4), generator())
    assert "old_logprobs" in exp and "ref_logprobs" not in exp
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ratios = []
    for i, mb in enumerate(obj.minibatches(exp)):
        out = obj.loss(model, mb)
        ratios.append((out.metrics["ratio_min"], out.metrics["ratio_max"]))
        if i == 0:  # nothing has been updated yet: exactly 1, not approximately
            assert ratios[0] == (1.0, 1.0)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert len(ratios) == 4  # 2 iterations x 2 minibatches
    # after updates the ratios move away from 1
    assert ratios[-1] != (1.0, 1.0)


def test_equal_reward_groups_are_reported_and_filtered():
    model = tiny_model()
    # answer_match on untrained arithmetic: every completion is wrong -> every group equal
    cfg = {"rewards": [{"reward": {"type": "answer_match"}}], "group_size": 2, "beta": 0.0}
    exp = objective(**cfg, filter_equal_groups=True).collect(model, prompt_batch(3), generator())
    assert exp["metrics"]["equal_reward_groups"] == 1.0 and exp["metrics"]["kept"] == 0.0
    obj = objective(**cfg, filter_equal_groups=True)
    out = obj.loss(model, next(obj.minibatches(exp)))
    assert out.n_tokens == 0 and float(out.loss) == 0.0
    kept = objective(group_size=2, beta=0.0, filter_equal_groups=True)
    exp2 = kept.collect(model, prompt_batch(8), generator())
    r = exp2["rewards"].view(8, 2)
    equal = (r[:, 0] == r[:, 1]).repeat_interleave(2)
    assert exp2["weights"].tolist() == (~equal).float().tolist()
    assert exp2["metrics"]["equal_reward_groups"] == pytest.approx(float(equal.float().mean()))
    assert 0 < exp2["metrics"]["kept"] < 1  # some groups of each kind


def test_beta_zero_skips_the_reference():
    model = tiny_model()
    obj = objective(beta=0.0)
    obj.setup(model)
    assert obj.reference is None and obj.state_dict() == {}
    with_ref = objective(beta=0.1)
    with_ref.setup(model)
    assert with_ref.reference is not None and with_ref.state_dict()  # a frozen copy


def test_group_size_below_two_is_a_validation_error():
    with pytest.raises(ValidationError, match="group_size"):
        GRPOConfig.model_validate({"type": "grpo", "rewards": [LENGTH], "group_size": 1})


def test_a_generation_budget_of_zero_is_an_error_naming_it():
    from splice.training.configs import RolloutConfig

    with pytest.raises(ValidationError, match="max_new_tokens"):
        RolloutConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        generator()(tiny_model(), prompt_batch(1)["prompt_ids"], max_new_tokens=0)


class NaNRewardConfig(ComponentConfig):
    type: Literal["grpo_test_nan"] = "grpo_test_nan"


class NaNRewardPlugin:
    @hookimpl
    def register_rewards(register: Any) -> None:
        register(NaNRewardConfig, lambda cfg, ctx: lambda p, c, r: [math.nan] * len(c))


def test_all_nan_rewards_are_an_error_naming_the_value():
    reg = get_registry()
    reg.register_plugin(NaNRewardPlugin, name="grpo-test-nan")
    try:
        obj = objective(rewards=[{"reward": {"type": "grpo_test_nan"}, "name": "broken"}])
        with pytest.raises(RewardError, match="reward 'broken' returned nan"):
            obj.collect(tiny_model(), prompt_batch(2), generator())
    finally:
        reg.unregister_plugin("grpo-test-nan")


def test_a_prompt_longer_than_the_context_is_an_error_naming_the_lengths():
    model = tiny_model(max_seq_len=8)
    obj = objective(group_size=2, beta=0.0)
    with pytest.raises(
        ValueError, match=r"prompt \+ max_new_tokens = \d+ exceeds the model's max_seq_len 8"
    ):
        obj.collect(model, prompt_batch(2), generator(max_new_tokens=6))
