"""Generalized advantage estimation and the masked statistics PPO needs.

Every tensor here is laid out per completion token: ``(B, L)`` with a ``mask`` that is
True on a row's generated tokens (a prefix of the row: a completion ends at its stop
token and is right-padded). Position ``t`` is the action "emit token ``t``" taken in
state ``s_t`` (prompt + tokens ``< t``); ``values[:, t]`` estimates ``V(s_t)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True (0 when there are none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, *, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over ``mask`` (Bessel-corrected when ``unbiased`` and n > 1)."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1.0)
    ss = (((x - mean) * m) ** 2).sum()
    denom = (n - 1.0).clamp(min=1.0) if unbiased else n.clamp(min=1.0)
    return ss / denom


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``mask``; 0 off the mask.

    With ``shift_mean=False`` only the scale changes (the mean is added back), which is
    how rewards are sometimes whitened without changing their sign.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al., 2016) per completion token.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V_{t+1} = 0`` past a row's last token: the
    episode ends there) and ``A_t = delta_t + gamma * lam * A_{t+1}``, computed backwards.

    Args:
        rewards: ``(B, L)`` per-token rewards (KL penalty on every token, score on the last).
        values: ``(B, L)`` value estimates ``V(s_t)`` from the rollout.
        mask: ``(B, L)`` bool, True on generated tokens.
        gamma: discount ``γ`` in [0, 1].
        lam: GAE's ``λ`` in [0, 1] (0: one-step TD, 1: Monte-Carlo return minus ``V``).

    Returns:
        ``(advantages (B, L), returns (B, L))`` with ``returns = advantages + values``;
        both 0 off the mask.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
            f"{tuple(mask.shape)} must have the same (B, L) shape"
        )
    m = mask.to(values.dtype)
    r, v = rewards * m, values * m
    length = r.shape[1]
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(length)):
        nxt = v[:, t + 1] if t + 1 < length else torch.zeros_like(last)  # 0 off the mask
        delta = r[:, t] + gamma * nxt - v[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + v) * m


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over ``mask``: 1 is a perfect critic,
    0 no better than a constant, negative worse (NaN when the returns do not vary)."""
    var_r = masked_var(returns, mask)
    ev = 1.0 - masked_var(returns - values, mask) / var_r.clamp(min=1e-12)
    return torch.where(var_r > 0, ev, torch.full_like(ev, float("nan")))


__all__ = ["explained_variance", "gae", "masked_mean", "masked_var", "whiten"]
