"""Every advantage estimator and policy loss splice-grpo registers passes splice.testing's suites."""

from __future__ import annotations

from typing import Any

from splice.testing import AdvantageEstimatorConformance, PolicyLossConformance
from splice_grpo import configs as c


class TestGroupNorm(AdvantageEstimatorConformance):
    def make_config(self) -> Any:
        return c.GroupNormConfig()


class TestDrGRPO(AdvantageEstimatorConformance):
    def make_config(self) -> Any:
        return c.GroupNormConfig(scale_by_std=False)


class TestRLOO(AdvantageEstimatorConformance):
    def make_config(self) -> Any:
        return c.RLOOConfig()


class TestReinforcePP(AdvantageEstimatorConformance):
    def make_config(self) -> Any:
        return c.ReinforcePPConfig(group_baseline=True)


class TestClippedToken(PolicyLossConformance):
    def make_config(self) -> Any:
        return c.ClippedTokenLossConfig(epsilon_high=0.28)


class TestGSPO(PolicyLossConformance):
    def make_config(self) -> Any:
        return c.GSPOLossConfig()
