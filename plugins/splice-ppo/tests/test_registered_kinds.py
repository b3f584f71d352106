"""PPO builds its advantage estimator and policy loss through the registry: GAE and the
clipped surrogate by default (from ``gamma``/``lam``/``clip``), a third party's by tag."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.generation.sampling import SamplingConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.rl.configs import ClippedTokenLossConfig, GAEConfig
from splice.rl.estimators import GeneralizedAdvantage
from splice.rl.kinds import AdvantageInputs, AdvantageOutput
from splice.rl.policy_losses import ClippedTokenLoss
from splice_ppo.configs import PPOConfig

TERMS = [{"reward": {"type": "length_penalty", "target": 2, "scale": 0.1}}]
PROMPTS = ["1+2=", "13+5=", "7*8="]


class CentredConfig(ComponentConfig):
    """A made-up estimator: each score minus its group's mean, one per completion."""

    type: Literal["test_centred"] = "test_centred"


class Centred:
    def __init__(self) -> None:
        self.seen: list[AdvantageInputs] = []

    def __call__(self, inputs: AdvantageInputs) -> AdvantageOutput:
        self.seen.append(inputs)
        g = inputs.rewards.view(-1, inputs.group_size)
        return AdvantageOutput((g - g.mean(-1, keepdim=True)).flatten())


class ThirdParty:
    @hookimpl
    def register_advantage_estimators(register: Any) -> None:
        register(CentredConfig, lambda cfg, ctx: Centred())


@pytest.fixture
def third_party():
    reg = get_registry()
    reg.register_plugin(ThirdParty, name="ppo-third-party")
    yield
    reg.unregister_plugin("ppo-third-party")


def test_the_defaults_are_gae_and_the_clipped_surrogate_from_the_flat_fields():
    cfg = PPOConfig(rewards=TERMS, gamma=0.9, lam=0.8, clip=0.1)
    assert cfg.advantage is None and cfg.policy_loss is None  # the dump keeps the flat fields
    assert cfg.advantage_config() == GAEConfig(gamma=0.9, lam=0.8)
    assert cfg.policy_loss_config() == ClippedTokenLossConfig(epsilon=0.1)
    obj = get_registry().build("objective", cfg, None)
    assert isinstance(obj.advantage, GeneralizedAdvantage)
    assert (obj.advantage.gamma, obj.advantage.lam) == (0.9, 0.8)
    assert isinstance(obj.policy_loss, ClippedTokenLoss) and obj.policy_loss.eps_low == 0.1
    assert PPOConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_a_flat_field_the_explicit_component_would_ignore_is_refused():
    with pytest.raises(ValueError, match=r"lam=0.8 with 'gae' given explicitly"):
        PPOConfig(rewards=TERMS, lam=0.8, advantage={"type": "gae", "lam": 0.9})
    with pytest.raises(ValueError, match=r"gamma=0.5 with 'gae' given explicitly"):
        PPOConfig(rewards=TERMS, gamma=0.5, advantage="gae")
    with pytest.raises(ValueError, match=r"clip=0.3 with 'clipped_token' given explicitly"):
        PPOConfig(rewards=TERMS, clip=0.3, policy_loss={"type": "clipped_token"})
    explicit = PPOConfig(rewards=TERMS, advantage={"type": "gae", "lam": 0.9})
    assert PPOConfig.model_validate_json(explicit.model_dump_json()) == explicit


def test_a_third_party_estimator_replaces_gae_by_tag(
    third_party, make_model, tokenizer, recorder, make_prompts
):
    cfg = PPOConfig(
        rewards=TERMS,
        samples_per_prompt=2,
        advantage="test_centred",
        whiten_advantages=False,
        kl_coef=0.0,
    )
    obj = get_registry().build("objective", cfg, None)
    obj.tokenizer = tokenizer
    model = make_model()
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=0)
    exp = obj.collect(model, make_prompts(PROMPTS), recorder(sampling))
    (seen,) = obj.advantage.seen
    mask = exp["completion_mask"]
    # The estimator got the typed inputs: scores, groups, mask, shaped rewards and values.
    assert seen.group_size == 2 and torch.equal(seen.mask, mask)
    assert seen.values is not None and seen.values.shape == mask.shape
    assert seen.token_rewards is not None and seen.token_rewards.shape == mask.shape
    torch.testing.assert_close(seen.token_rewards.sum(-1), seen.rewards)  # kl_coef 0
    # One advantage per completion, applied to each of its tokens.
    g = seen.rewards.view(-1, 2)
    per_row = (g - g.mean(-1, keepdim=True)).flatten()
    assert torch.equal(exp["advantages"], per_row[:, None].expand_as(mask) * mask)
    # No returns from the estimator: the critic regresses on the (undiscounted) return.
    torch.testing.assert_close(exp["returns"][mask], seen.rewards[:, None].expand_as(mask)[mask])
    out = obj.loss(model, next(obj.minibatches(exp)))
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_an_estimator_with_the_wrong_shape_is_named(make_model, tokenizer, recorder, make_prompts):
    from splice_ppo.objective import PPOObjective

    def bad(inputs: AdvantageInputs) -> AdvantageOutput:
        return AdvantageOutput(inputs.rewards[:1])

    obj = PPOObjective(PPOConfig(rewards=TERMS), tokenizer=tokenizer, advantage=bad)
    sampling = SamplingConfig(max_new_tokens=4, temperature=1.0, seed=0)
    with pytest.raises(ValueError, match=r"advantage estimator 'bad' returned shape \(1,\)"):
        obj.collect(make_model(), make_prompts(PROMPTS), recorder(sampling))
