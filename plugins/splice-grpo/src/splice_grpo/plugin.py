"""splice-grpo entry point: the GRPO objective, its advantage estimators and GSPO.

The token-level ``clipped_token`` policy loss is the core's (``splice.rl.policy_losses``),
shared with PPO.
"""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_grpo.configs import (
    GroupNormConfig,
    GRPOConfig,
    GSPOLossConfig,
    ReinforcePPConfig,
    RLOOConfig,
)


@hookimpl
def register_objectives(register: Any) -> None:
    register(GRPOConfig, "splice_grpo.objective:build_grpo")


@hookimpl
def register_advantage_estimators(register: Any) -> None:
    register(GroupNormConfig, "splice_grpo.advantages:build_group_norm")
    register(RLOOConfig, "splice_grpo.advantages:build_rloo")
    register(ReinforcePPConfig, "splice_grpo.advantages:build_reinforce_pp")


@hookimpl
def register_policy_losses(register: Any) -> None:
    register(GSPOLossConfig, "splice_grpo.policy_losses:build_gspo")
