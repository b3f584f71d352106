"""The clipped surrogate of PPO (Schulman et al., 2017), per token; GRPO uses it too.

``ρ_t = exp(log π - log π_old)``; the objective per token is
``min(ρ_t A_t, clip(ρ_t, 1 - ε_low, 1 + ε_high) A_t)`` and the loss is its negative, so the
clip only ever removes incentive (never adds it). ``A`` is per token ``(B, L)`` (PPO's GAE)
or per sequence ``(B, 1)`` broadcast over tokens (GRPO's group-normalised rewards).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ClippedSurrogate:
    """Attributes:
    per_token: ``(B, L)`` loss ``-min(ρ A, clip(ρ) A)`` (the caller masks and averages).
    ratio: ``(B, L)`` the importance ratio ``ρ`` (with grad).
    clipped: ``(B, L)`` bool, where the clipped term was the smaller objective (the clip
        is what the loss sees there).
    """

    per_token: Tensor
    ratio: Tensor
    clipped: Tensor


def clipped_surrogate(
    log_ratio: Tensor, advantages: Tensor, *, eps_low: float, eps_high: float | None = None
) -> ClippedSurrogate:
    """The per-token clipped surrogate of ``log_ratio = log π - log π_old`` ``(B, L)``.

    Args:
        log_ratio: ``(B, L)``, with grad through ``log π``.
        advantages: ``(B, L)`` or ``(B, 1)``, no grad.
        eps_low: ``ε`` below 1; ``eps_high`` above 1 (default: ``eps_low``, symmetric).
    """
    high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        active = clipped < unclipped
    return ClippedSurrogate(per_token=per_token, ratio=ratio, clipped=active)


__all__ = ["ClippedSurrogate", "clipped_surrogate"]
