"""Advantage estimators (kind ``advantage_estimator``): rewards of a batch -> advantages.

An estimator is called as ``estimator(AdvantageInputs) -> AdvantageOutput``
(``splice.rl.kinds``); these read ``rewards`` ``(N,)`` with ``N = P * G`` rows, the ``G``
completions of a prompt adjacent (as ``generate`` returns them), and ``group_size``, and give
``(N,)`` advantages, one per completion, applied to each of its tokens. The 0.1 call
``estimator(rewards, group_size) -> (N,)`` still works with a ``DeprecationWarning``.
Third-party plugins register more through ``register_advantage_estimators``.
"""

from __future__ import annotations

from splice.rl.advantages import group_normalize, reward_groups
from splice.rl.kinds import SequenceAdvantageEstimator
from torch import Tensor

from splice_grpo.configs import GroupNormConfig, ReinforcePPConfig, RLOOConfig


class GroupNormalized(SequenceAdvantageEstimator):
    """GRPO: ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` (std off: Dr. GRPO).

    The std is the unbiased sample std of the group, as in DeepSeekMath's GRPO and TRL.
    """

    def __init__(self, *, scale_by_std: bool = True, eps: float = 1e-4) -> None:
        self.scale_by_std, self.eps = scale_by_std, eps

    def sequence_advantages(self, rewards: Tensor, group_size: int) -> Tensor:
        return group_normalize(rewards, group_size, scale_by_std=self.scale_by_std, eps=self.eps)


class LeaveOneOut(SequenceAdvantageEstimator):
    """RLOO: ``A_i = r_i - mean_{j != i}(r_j) = G/(G-1) * (r_i - mean_g(r))``."""

    def sequence_advantages(self, rewards: Tensor, group_size: int) -> Tensor:
        g = reward_groups(rewards, group_size)  # (P, G)
        others = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
        return (g - others).flatten()


class ReinforcePlusPlus(SequenceAdvantageEstimator):
    """REINFORCE++: ``A = (r - mean_batch(r)) / (std_batch(r) + eps)``; with
    ``group_baseline`` the group mean is subtracted first (REINFORCE++-baseline)."""

    def __init__(self, *, group_baseline: bool = False, eps: float = 1e-8) -> None:
        self.group_baseline, self.eps = group_baseline, eps

    def sequence_advantages(self, rewards: Tensor, group_size: int) -> Tensor:
        g = reward_groups(rewards, group_size)
        centred = g - g.mean(-1, keepdim=True) if self.group_baseline else g - g.mean()
        flat = centred.flatten()
        std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
        return (flat - flat.mean()) / (std + self.eps)


def build_group_norm(config: GroupNormConfig, ctx: object = None) -> GroupNormalized:
    return GroupNormalized(scale_by_std=config.scale_by_std, eps=config.eps)


def build_rloo(config: RLOOConfig, ctx: object = None) -> LeaveOneOut:
    return LeaveOneOut()


def build_reinforce_pp(config: ReinforcePPConfig, ctx: object = None) -> ReinforcePlusPlus:
    return ReinforcePlusPlus(group_baseline=config.group_baseline, eps=config.eps)


__all__ = ["GroupNormalized", "LeaveOneOut", "ReinforcePlusPlus"]
