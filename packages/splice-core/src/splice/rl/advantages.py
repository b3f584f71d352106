"""Advantages: generalized advantage estimation (PPO) and group normalisation (GRPO).

Per-token layout as in ``splice.rl.stats``: ``(B, L)`` with a ``mask`` that is True on a
row's generated tokens (a prefix of the row). Position ``t`` is the action "emit token
``t``" in state ``s_t``; ``values[:, t]`` estimates ``V(s_t)``. Group layout: ``(N,)``
rewards with ``N = P * G``, the ``G`` completions of a prompt adjacent.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def reward_groups(rewards: Tensor, group_size: int) -> Tensor:
    """``(N,) -> (P, G)`` float; raises naming the sizes when ``N`` is not a multiple of ``G``."""
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}"
        )
    return rewards.float().view(-1, group_size)


def group_normalize(
    rewards: Tensor, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-4
) -> Tensor:
    """GRPO's ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` per group (``(N,) -> (N,)``).

    The std is the unbiased sample std of the group, as in DeepSeekMath's GRPO and TRL;
    ``scale_by_std=False`` only centres (Dr. GRPO).
    """
    g = reward_groups(rewards, group_size)  # (P, G)
    adv = g - g.mean(-1, keepdim=True)
    if scale_by_std:
        adv = adv / (g.std(-1, keepdim=True) + eps)
    return adv.flatten()


__all__ = ["gae", "group_normalize", "reward_groups"]
