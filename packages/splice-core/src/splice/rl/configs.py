"""Configs of the RL components the core registers (torch-free, so the registry loads them
cheaply): the ``gae`` advantage estimator and the ``clipped_token`` policy loss."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat

from splice.config import ComponentConfig


class GAEConfig(ComponentConfig):
    """Generalized advantage estimation (Schulman et al., 2016) from a critic's values.

    Needs an objective with a critic (``ppo``): ``AdvantageInputs.values`` and ``mask``.

    Attributes:
        gamma: discount ``γ`` (1.0: no discount within a completion).
        lam: ``λ``, the bias/variance trade-off (0: one-step TD, 1: Monte-Carlo return).
    """

    type: Literal["gae"] = "gae"
    gamma: float = Field(default=1.0, ge=0.0, le=1.0)
    lam: float = Field(default=0.95, ge=0.0, le=1.0)


class ClippedTokenLossConfig(ComponentConfig):
    """PPO/GRPO clipped surrogate per token: ``-min(ρ A, clip(ρ, 1-ε, 1+ε_high) A)``.

    Attributes:
        epsilon: lower clip range ``ε``.
        epsilon_high: upper clip range (DAPO's "clip-higher"); None = ``epsilon``.
    """

    type: Literal["clipped_token"] = "clipped_token"
    epsilon: PositiveFloat = 0.2
    epsilon_high: PositiveFloat | None = None


__all__ = ["ClippedTokenLossConfig", "GAEConfig"]
