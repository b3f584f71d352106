"""The KL penalty to the reference model, folded into PPO's per-token reward.

``r_t = -β kl_t`` on every generated token, plus the sequence's score on its last token
(Ziegler et al., 2019; Stiennon et al., 2020). ``kl_t`` estimates
``KL(π || π_ref)`` at token ``t`` from the sampled token alone (``splice.rl.kl``).
"""

from __future__ import annotations

from splice.rl.kl import KLEstimator, token_kl
from torch import Tensor


def shaped_rewards(scores: Tensor, kl: Tensor, mask: Tensor, *, kl_coef: float) -> Tensor:
    """``(B, L)`` per-token rewards: ``-kl_coef * kl`` everywhere, ``+ score`` on the last token.

    Args:
        scores: ``(B,)`` each completion's reward (the weighted sum of the reward terms).
        kl: ``(B, L)`` per-token KL estimates (``token_kl``).
        mask: ``(B, L)`` bool, generated tokens (a prefix of each row, at least one token).
        kl_coef: ``β``.
    """
    m = mask.to(kl.dtype)
    rewards = -kl_coef * kl * m
    last = (mask.long().sum(-1) - 1).clamp(min=0)  # (B,) index of each row's last token
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


class AdaptiveKLController:
    """``β`` that tracks a target KL (Ziegler et al., 2019, section 2.2).

    After each rollout: ``e = clip(KL / target - 1, -0.2, 0.2)`` and
    ``β <- β (1 + e * n / horizon)`` where ``n`` is the rollout's number of sequences.
    With ``target=None`` ``β`` stays fixed.
    """

    def __init__(self, init: float, *, target: float | None = None, horizon: int = 10_000) -> None:
        self.value = float(init)
        self.target, self.horizon = target, horizon

    def update(self, kl: float, n_sequences: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_sequences / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"kl_coef": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["kl_coef"])


__all__ = ["AdaptiveKLController", "KLEstimator", "shaped_rewards", "token_kl"]
