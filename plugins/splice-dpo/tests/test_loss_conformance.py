"""Every preference loss splice-dpo registers passes splice.testing's suite."""

from __future__ import annotations

from typing import Any

from splice.testing import PreferenceLossConformance
from splice_dpo import configs as c


class TestSigmoid(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.SigmoidLossConfig()


class TestConservative(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.ConservativeLossConfig()


class TestRobust(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.RobustLossConfig()


class TestHinge(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.HingeLossConfig()


class TestIPO(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.IPOLossConfig()


class TestSimPO(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.SimPOLossConfig()


class TestORPO(PreferenceLossConformance):
    def make_config(self) -> Any:
        return c.ORPOLossConfig()
