"""The core's rewards pass splice.testing's reward suite."""

from __future__ import annotations

from typing import Any

from splice.rewards.configs import (
    AnswerMatchRewardConfig,
    FormatRewardConfig,
    LengthPenaltyRewardConfig,
)
from splice.testing import RewardConformance


class TestAnswerMatch(RewardConformance):
    def make_config(self) -> Any:
        return AnswerMatchRewardConfig()


class TestFormat(RewardConformance):
    def make_config(self) -> Any:
        return FormatRewardConfig()


class TestLengthPenalty(RewardConformance):
    def make_config(self) -> Any:
        return LengthPenaltyRewardConfig(target=5, scale=0.1)
