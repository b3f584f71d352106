"""Rewards and verifiers shared by every post-training objective (kind ``"reward"``).

Built-in rewards (registered by ``splice.builtin``): ``answer_match``, ``format``,
``length_penalty`` and ``callable``. Plugins add more through ``register_rewards``.
``build_rewards([RewardTermConfig(...), ...])`` gives a ``RewardSet`` whose ``score``
returns the weighted total and each reward's scores.

The configs import without torch (the registry loads them cheaply); the rest is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from splice.rewards.configs import (
    AnswerMatchRewardConfig,
    CallableRewardConfig,
    FormatRewardConfig,
    LengthPenaltyRewardConfig,
    RewardTermConfig,
)

if TYPE_CHECKING:
    from splice.rewards.reward_set import RewardError, RewardScores, RewardSet, build_rewards
    from splice.rewards.verifiers import (
        answer_matches,
        extract_answer,
        final_answer,
        normalize_answer,
    )

_LAZY = {
    "RewardError": "splice.rewards.reward_set",
    "RewardScores": "splice.rewards.reward_set",
    "RewardSet": "splice.rewards.reward_set",
    "build_rewards": "splice.rewards.reward_set",
    "answer_matches": "splice.rewards.verifiers",
    "extract_answer": "splice.rewards.verifiers",
    "final_answer": "splice.rewards.verifiers",
    "normalize_answer": "splice.rewards.verifiers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'splice.rewards' has no attribute {name!r}")


__all__ = [
    "AnswerMatchRewardConfig",
    "CallableRewardConfig",
    "FormatRewardConfig",
    "LengthPenaltyRewardConfig",
    "RewardError",
    "RewardScores",
    "RewardSet",
    "RewardTermConfig",
    "answer_matches",
    "build_rewards",
    "extract_answer",
    "final_answer",
    "normalize_answer",
]
