"""Configs of the test-only components ``splice.testing`` registers (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeFloat

from splice.config import ComponentConfig


class SlowLengthRewardConfig(ComponentConfig):
    """A reward that sleeps ``delay_s`` per call: an RL run slow enough for a kill to land
    mid-run (see ``splice.testing.resume.register_slow_length_reward``)."""

    type: Literal["testing_slow_length"] = "testing_slow_length"
    target_len: int = 4
    delay_s: NonNegativeFloat = 0.15
