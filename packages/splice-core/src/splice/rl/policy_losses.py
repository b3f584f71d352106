"""The ``clipped_token`` policy loss: PPO's clipped surrogate per token, shared by PPO and GRPO.

``clipped_loss`` adds what every clipped loss logs to ``splice.rl.surrogate``'s maths; other
losses (GSPO's sequence ratio in splice-grpo) call it with their own log-ratio.
"""

from __future__ import annotations

import torch
from torch import Tensor

from splice.rl.configs import ClippedTokenLossConfig
from splice.rl.kinds import PolicyLossInputs, PolicyLossOutput, TokenPolicyLoss
from splice.rl.stats import masked_mean
from splice.rl.surrogate import clipped_surrogate


def clipped_loss(
    log_ratio: Tensor, advantages: Tensor, mask: Tensor, eps_low: float, eps_high: float
) -> PolicyLossOutput:
    """``-min(ρ A, clip(ρ, 1-ε_low, 1+ε_high) A)`` with ``ρ = exp(log_ratio)``, per token.

    Args:
        log_ratio: ``(N, L)`` ``log π - log π_old`` (with grad).
        advantages: ``(N,)`` per completion or ``(N, L)`` per token.
        mask: ``(N, L)`` bool, the generated tokens (metrics only count these).

    Returns:
        ``per_token (N, L)`` and metrics: ``clip_low`` / ``clip_high`` (share of tokens whose
        ratio the clip holds below / above), ``clip_fraction`` (their sum: where the clipped
        term is what the loss sees), ``ratio_mean`` / ``ratio_min`` / ``ratio_max``.
    """
    adv = PolicyLossInputs(log_ratio, log_ratio, advantages, mask).token_advantages()
    sur = clipped_surrogate(log_ratio, adv, eps_low=eps_low, eps_high=eps_high)
    ratio, per_token = sur.ratio, sur.per_token  # (N, L)
    with torch.no_grad():
        m = mask.bool()
        n = m.sum().clamp(min=1)
        r = ratio.detach()
        low = (r < 1.0 - eps_low) & (adv < 0) & m  # the clip is what the loss sees
        high = (r > 1.0 + eps_high) & (adv > 0) & m
        real = r[m]
        metrics = {
            "clip_low": low.sum() / n,
            "clip_high": high.sum() / n,
            "clip_fraction": masked_mean(sur.clipped.float(), m),
            "ratio_mean": real.mean() if real.numel() else r.new_ones(()),
            "ratio_min": real.min() if real.numel() else r.new_ones(()),
            "ratio_max": real.max() if real.numel() else r.new_ones(()),
        }
    return PolicyLossOutput(per_token=per_token, metrics=metrics)


class ClippedTokenLoss(TokenPolicyLoss):
    """Token-level importance ratio ``ρ_t = π(y_t) / π_old(y_t)``, clipped per token (PPO-clip;
    with ``epsilon_high`` DAPO's clip-higher)."""

    def __init__(self, *, epsilon: float = 0.2, epsilon_high: float | None = None) -> None:
        self.eps_low = epsilon
        self.eps_high = epsilon if epsilon_high is None else epsilon_high

    def compute(self, inputs: PolicyLossInputs) -> PolicyLossOutput:
        log_ratio = inputs.logprobs - inputs.old_logprobs
        return clipped_loss(log_ratio, inputs.advantages, inputs.mask, self.eps_low, self.eps_high)


def build_clipped_token(config: ClippedTokenLossConfig, ctx: object = None) -> ClippedTokenLoss:
    return ClippedTokenLoss(epsilon=config.epsilon, epsilon_high=config.epsilon_high)


__all__ = ["ClippedTokenLoss", "build_clipped_token", "clipped_loss"]
