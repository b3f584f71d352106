"""Policy-gradient losses (kind ``policy_loss``): per-token losses from log-prob ratios.

A policy loss is called as ``loss(logprobs, old_logprobs, advantages, mask)``:

* ``logprobs`` ``(N, L)``: the current policy's log-probs of the completion tokens (with
  gradient); ``old_logprobs`` ``(N, L)``: the rollout policy's (no gradient);
* ``advantages`` ``(N,)``: one per completion; ``mask`` ``(N, L)`` bool, the real tokens.

It returns ``PolicyLossOutput(per_token (N, L), metrics)``; the objective adds the KL term
and aggregates over tokens and sequences. Third-party plugins register more through
``register_policy_losses``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from splice.rl.surrogate import clipped_surrogate as rl_clipped_surrogate
from torch import Tensor

from splice_grpo.configs import ClippedTokenLossConfig, GSPOLossConfig


@dataclass
class PolicyLossOutput:
    """``per_token`` ``(N, L)`` losses (0 off-mask is not required: the caller masks) and
    detached scalar metrics (``clip_low``, ``clip_high``, ``ratio_mean``, ...)."""

    per_token: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def clipped_surrogate(
    log_ratio: Tensor, advantages: Tensor, mask: Tensor, eps_low: float, eps_high: float
) -> PolicyLossOutput:
    """``-min(ρ A, clip(ρ, 1-ε_low, 1+ε_high) A)`` with ``ρ = exp(log_ratio)``, per token."""
    adv = advantages[:, None].to(log_ratio.dtype)  # (N, 1)
    sur = rl_clipped_surrogate(log_ratio, adv, eps_low=eps_low, eps_high=eps_high)  # splice.rl
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
            "ratio_mean": real.mean() if real.numel() else r.new_ones(()),
            "ratio_min": real.min() if real.numel() else r.new_ones(()),
            "ratio_max": real.max() if real.numel() else r.new_ones(()),
        }
    return PolicyLossOutput(per_token=per_token, metrics=metrics)


class ClippedTokenLoss:
    """Token-level importance ratio ``ρ_t = π(y_t) / π_old(y_t)``, clipped per token."""

    def __init__(self, *, epsilon: float = 0.2, epsilon_high: float | None = None) -> None:
        self.eps_low = epsilon
        self.eps_high = epsilon if epsilon_high is None else epsilon_high

    def __call__(
        self, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor
    ) -> PolicyLossOutput:
        return clipped_surrogate(
            logprobs - old_logprobs, advantages, mask, self.eps_low, self.eps_high
        )


class SequenceRatioLoss:
    """GSPO: the ratio of a whole sequence, length-normalised:
    ``s_i = exp(mean_t(log π(y_t) - log π_old(y_t)))``, clipped per sequence.

    Implemented in the "GSPO-token" form: token ``t`` gets the ratio
    ``sg(s_i) * π(y_t) / sg(π(y_t))``, whose value is ``s_i`` and whose gradient is
    ``s_i ∇log π(y_t)``, so a per-sequence token mean gives GSPO's gradient
    ``s_i * mean_t ∇log π(y_t)`` exactly.
    """

    def __init__(self, *, epsilon: float = 3e-4, epsilon_high: float | None = 4e-4) -> None:
        self.eps_low = epsilon
        self.eps_high = epsilon if epsilon_high is None else epsilon_high

    def __call__(
        self, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor
    ) -> PolicyLossOutput:
        m = mask.to(logprobs.dtype)
        lengths = m.sum(-1).clamp(min=1)  # (N,)
        log_s = ((logprobs - old_logprobs) * m).sum(-1) / lengths  # (N,)
        log_ratio = log_s.detach()[:, None] + logprobs - logprobs.detach()  # (N, L)
        return clipped_surrogate(log_ratio, advantages, mask, self.eps_low, self.eps_high)


def build_clipped_token(config: ClippedTokenLossConfig, ctx: object = None) -> ClippedTokenLoss:
    return ClippedTokenLoss(epsilon=config.epsilon, epsilon_high=config.epsilon_high)


def build_gspo(config: GSPOLossConfig, ctx: object = None) -> SequenceRatioLoss:
    return SequenceRatioLoss(epsilon=config.epsilon, epsilon_high=config.epsilon_high)


__all__ = ["ClippedTokenLoss", "PolicyLossOutput", "SequenceRatioLoss", "clipped_surrogate"]
