"""The ``gae`` advantage estimator: GAE (``splice.rl.advantages.gae``) as a registered kind.

PPO builds it from its config (``advantage``, by default ``{"type": "gae"}`` with PPO's
``gamma`` and ``lam``); any objective that gives ``AdvantageInputs.values`` and ``mask`` can.
"""

from __future__ import annotations

from splice.rl.advantages import gae
from splice.rl.configs import GAEConfig
from splice.rl.kinds import AdvantageInputs, AdvantageOutput


class GeneralizedAdvantage:
    """Per-token advantages and returns from per-token rewards and a critic's values.

    Reads ``values`` and ``mask`` (required) and ``token_rewards`` (else each completion's
    score on its last token). Returns ``(N, L)`` advantages and returns
    ``advantages + values``, both 0 off the mask.
    """

    def __init__(self, *, gamma: float = 1.0, lam: float = 0.95) -> None:
        self.gamma, self.lam = gamma, lam

    def __call__(self, inputs: AdvantageInputs) -> AdvantageOutput:
        values, mask = inputs.require("gae", "values", "mask")
        rewards = inputs.rewards_per_token("gae")
        advantages, returns = gae(rewards, values, mask, gamma=self.gamma, lam=self.lam)
        return AdvantageOutput(advantages, returns)


def build_gae(config: GAEConfig, ctx: object = None) -> GeneralizedAdvantage:
    return GeneralizedAdvantage(gamma=config.gamma, lam=config.lam)


__all__ = ["GeneralizedAdvantage", "build_gae"]
