"""Rule-based verifiers in the style of DeepSeek-R1: final-answer match, format, length.

Each builder takes its config (and an unused build context) and returns a ``Reward``:
``reward(prompts, completions, references) -> Tensor (N,) float32``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor

from splice.rewards.configs import (
    AnswerMatchRewardConfig,
    FormatRewardConfig,
    LengthPenaltyRewardConfig,
)

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def extract_answer(completion: str, *, tag: str = "answer") -> str:
    """The text of the last ``<tag>...</tag>`` in ``completion`` (stripped), else the completion.

    >>> extract_answer("<think>7+5 is 12</think><answer> 12 </answer>")
    '12'
    """
    matches = re.findall(rf"<{tag}>(.*?)</{tag}>", completion, flags=re.DOTALL)
    return (matches[-1] if matches else completion).strip()


def _final_token(text: str) -> str:
    """The last number in ``text``, or its last whitespace-separated token, or ``""``."""
    numbers = _NUMBER.findall(text)
    if numbers:
        return str(numbers[-1])
    tokens = text.split()
    return tokens[-1] if tokens else ""


def _same_number(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isfinite(x) and x == y


def answer_matches(
    completion: str, reference: str, *, tag: str = "answer", numeric: bool = True
) -> bool:
    """Whether ``completion``'s final answer equals ``reference`` (see ``AnswerMatchRewardConfig``)."""
    ref = reference.strip()
    answer = extract_answer(completion, tag=tag)
    if answer == ref:
        return True
    final = _final_token(answer)
    if final == ref:
        return True
    return numeric and bool(final) and _same_number(final, ref)


class AnswerMatchReward:
    """1.0 per completion whose final answer equals its reference, else 0.0."""

    def __init__(self, config: AnswerMatchRewardConfig) -> None:
        self.tag, self.numeric = config.tag, config.numeric

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> Tensor:
        hits = [
            answer_matches(c, r, tag=self.tag, numeric=self.numeric)
            for c, r in zip(completions, references)
        ]
        return torch.tensor(hits, dtype=torch.float32)  # (N,)


class FormatReward:
    """1.0 per completion that is exactly ``<think>…</think><answer>…</answer>`` (outer whitespace ok)."""

    def __init__(self, config: FormatRewardConfig) -> None:
        t, a = config.think_tag, config.answer_tag
        self.pattern = re.compile(rf"\s*<{t}>.*?</{t}>\s*<{a}>.*?</{a}>\s*", flags=re.DOTALL)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> Tensor:
        hits = [self.pattern.fullmatch(c) is not None for c in completions]
        return torch.tensor(hits, dtype=torch.float32)  # (N,)


class LengthPenaltyReward:
    """``-scale * max(0, length - target)`` per completion, length in chars or words."""

    def __init__(self, config: LengthPenaltyRewardConfig) -> None:
        self.target, self.scale, self.unit = config.target, config.scale, config.unit

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> Tensor:
        lengths = [len(c) if self.unit == "chars" else len(c.split()) for c in completions]
        excess = torch.tensor(lengths, dtype=torch.float32) - self.target  # (N,)
        return -self.scale * excess.clamp(min=0.0)


def build_answer_match(config: AnswerMatchRewardConfig, ctx: object = None) -> AnswerMatchReward:
    return AnswerMatchReward(config)


def build_format(config: FormatRewardConfig, ctx: object = None) -> FormatReward:
    return FormatReward(config)


def build_length_penalty(
    config: LengthPenaltyRewardConfig, ctx: object = None
) -> LengthPenaltyReward:
    return LengthPenaltyReward(config)


__all__ = [
    "AnswerMatchReward",
    "FormatReward",
    "LengthPenaltyReward",
    "answer_matches",
    "extract_answer",
]
