"""A third-party plugin adds an advantage estimator and a policy loss through the hooks,
without touching splice-grpo, and GRPO uses them by tag: written against the typed contract
(``splice.rl.kinds``), or against the 0.1 positional calls (still used, with a warning)."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.rl.kinds import AdvantageInputs, AdvantageOutput, PolicyLossInputs, PolicyLossOutput
from splice_grpo.configs import GRPOConfig

from .conftest import prompt_batch, tiny_model
from .test_objective import LENGTH, generator


def sign_of_median_gap(rewards, group_size):
    g = rewards.view(-1, group_size)
    return torch.sign(g - g.median(-1, keepdim=True).values).flatten()


class SignConfig(ComponentConfig):
    """Advantage = sign(r - group median): a made-up estimator (typed contract)."""

    type: Literal["test_sign"] = "test_sign"


class LegacySignConfig(ComponentConfig):
    type: Literal["test_sign_01"] = "test_sign_01"


class Sign:
    def __call__(self, inputs: AdvantageInputs) -> AdvantageOutput:
        return AdvantageOutput(sign_of_median_gap(inputs.rewards, inputs.group_size))


class LegacySign:
    def __call__(self, rewards, group_size):  # the 0.1 call
        return sign_of_median_gap(rewards, group_size)


class PlainPGConfig(ComponentConfig):
    """Unclipped REINFORCE: -A log π."""

    type: Literal["test_plain_pg"] = "test_plain_pg"


class LegacyPlainPGConfig(ComponentConfig):
    type: Literal["test_plain_pg_01"] = "test_plain_pg_01"


def plain_pg(inputs: PolicyLossInputs) -> PolicyLossOutput:
    return PolicyLossOutput(per_token=-inputs.token_advantages() * inputs.logprobs)


def legacy_plain_pg(logprobs, old_logprobs, advantages, mask):  # the 0.1 call
    return PolicyLossOutput(per_token=-advantages[:, None] * logprobs)


class ThirdParty:
    @hookimpl
    def register_advantage_estimators(register: Any) -> None:
        register(SignConfig, lambda cfg, ctx: Sign())
        register(LegacySignConfig, lambda cfg, ctx: LegacySign())

    @hookimpl
    def register_policy_losses(register: Any) -> None:
        register(PlainPGConfig, lambda cfg, ctx: plain_pg)
        register(LegacyPlainPGConfig, lambda cfg, ctx: legacy_plain_pg)


def _train_once(advantage: str, policy_loss: str) -> None:
    cfg = GRPOConfig.model_validate(
        {
            "type": "grpo",
            "rewards": [LENGTH],
            "group_size": 4,
            "beta": 0.0,
            "advantage": advantage,
            "policy_loss": {"type": policy_loss},
        }
    )
    assert GRPOConfig.model_validate_json(cfg.model_dump_json()) == cfg  # round-trips
    obj = get_registry().build("objective", cfg, None)
    model = tiny_model()
    exp = obj.collect(model, prompt_batch(3), generator())
    assert torch.equal(exp["advantages"], sign_of_median_gap(exp["rewards"], 4))
    out = obj.loss(model, next(obj.minibatches(exp)))
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.fixture
def third_party():
    reg = get_registry()
    reg.register_plugin(ThirdParty, name="grpo-third-party")
    yield
    reg.unregister_plugin("grpo-third-party")


def test_a_third_party_estimator_and_loss_are_used_by_tag(third_party):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the typed contract: no warning
        _train_once("test_sign", "test_plain_pg")


def test_a_plugin_written_against_the_01_calls_still_trains_with_a_warning(third_party):
    with (
        pytest.warns(DeprecationWarning, match=r"'test_sign_01' called as estimator\(rewards"),
        pytest.warns(DeprecationWarning, match=r"'test_plain_pg_01' called as loss\("),
    ):
        _train_once("test_sign_01", "test_plain_pg_01")
