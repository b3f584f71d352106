"""A third-party plugin adds an advantage estimator and a policy loss through the hooks,
without touching splice-grpo, and GRPO uses them by tag."""

from __future__ import annotations

from typing import Any, Literal

import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice_grpo.configs import GRPOConfig
from splice_grpo.policy_losses import PolicyLossOutput

from .conftest import prompt_batch, tiny_model
from .test_objective import LENGTH, generator


class SignConfig(ComponentConfig):
    """Advantage = sign(r - group median): a made-up estimator."""

    type: Literal["test_sign"] = "test_sign"


class Sign:
    def __call__(self, rewards, group_size):
        g = rewards.view(-1, group_size)
        return torch.sign(g - g.median(-1, keepdim=True).values).flatten()


class PlainPGConfig(ComponentConfig):
    """Unclipped REINFORCE: -A log π."""

    type: Literal["test_plain_pg"] = "test_plain_pg"


def plain_pg(logprobs, old_logprobs, advantages, mask):
    return PolicyLossOutput(per_token=-advantages[:, None] * logprobs)


class ThirdParty:
    @hookimpl
    def register_advantage_estimators(register: Any) -> None:
        register(SignConfig, lambda cfg, ctx: Sign())

    @hookimpl
    def register_policy_losses(register: Any) -> None:
        register(PlainPGConfig, lambda cfg, ctx: plain_pg)


def test_a_third_party_estimator_and_loss_are_used_by_tag():
    reg = get_registry()
    reg.register_plugin(ThirdParty, name="grpo-third-party")
    try:
        cfg = GRPOConfig.model_validate(
            {
                "type": "grpo",
                "rewards": [LENGTH],
                "group_size": 4,
                "beta": 0.0,
                "advantage": "test_sign",
                "policy_loss": {"type": "test_plain_pg"},
            }
        )
        assert GRPOConfig.model_validate_json(cfg.model_dump_json()) == cfg  # round-trips
        obj = reg.build("objective", cfg, None)
        model = tiny_model()
        exp = obj.collect(model, prompt_batch(3), generator())
        g = exp["rewards"].view(3, 4)
        want = torch.sign(g - g.median(-1, keepdim=True).values).flatten()
        assert torch.equal(exp["advantages"], want)
        out = obj.loss(model, next(obj.minibatches(exp)))
        out.loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    finally:
        reg.unregister_plugin("grpo-third-party")
