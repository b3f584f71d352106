"""Rule-based verifiers in the style of DeepSeek-R1: final-answer match, format, length.

Each builder takes its config (and an unused build context) and returns a ``Reward``:
``reward(prompts, completions, references) -> Tensor (N,) float32``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

import torch
from torch import Tensor

from splice.rewards.configs import (
    AnswerMatchRewardConfig,
    FormatRewardConfig,
    LengthPenaltyRewardConfig,
)

# A whole string that is one number: optional sign, digits (plain or grouped by commas
# in threes), optional fraction, optional exponent. Nothing else (no "nan", "inf", "1,00").
_NUMBER = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def final_answer(completion: str, *, tag: str = "answer", think_tag: str = "think") -> str | None:
    """The completion's one final answer (stripped), or None when it has none or several.

    The answer part is the text after the last ``</think_tag>``; it must open no new
    think block and hold exactly one ``<tag>…</tag>`` block, whose content is the answer.
    A completion with no think or answer tag anywhere is itself the answer (tasks that
    answer directly, ``"37+5="`` -> ``"42"``).

    >>> final_answer("<think>7+5 is 12</think><answer> 12 </answer>")
    '12'
    >>> final_answer("<answer>11</answer><answer>12</answer>") is None
    True
    """
    open_think, close_think = f"<{think_tag}>", f"</{think_tag}>"
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    tail = completion.rpartition(close_think)[2]
    if open_think in tail:  # reasoning opened and never closed: no answer yet
        return None
    if not any(t in completion for t in (open_think, close_think, open_tag, close_tag)):
        return completion.strip()
    if tail.count(open_tag) != 1 or tail.count(close_tag) != 1:
        return None
    before, _, rest = tail.partition(open_tag)
    if close_tag in before:  # "</answer> … <answer>": no block
        return None
    return rest.partition(close_tag)[0].strip()


def extract_answer(completion: str, *, tag: str = "answer") -> str:
    """``final_answer`` as a string: ``""`` when the completion has no single final answer."""
    answer = final_answer(completion, tag=tag)
    return "" if answer is None else answer


def normalize_answer(text: str, *, numeric: bool = True, case_sensitive: bool = False) -> str:
    """The form two answers are compared in (both the completion's and the reference's).

    A number becomes its exact value as digits and exponent (``"1,000"``, ``"+1e3"``,
    ``"001000.0"`` -> ``"1e3"``); other text has whitespace runs collapsed and, unless ``case_sensitive``,
    is case-folded.
    """
    text = " ".join(text.split())
    if numeric and _NUMBER.fullmatch(text):
        # exact, not through a context (Decimal.normalize rounds to 28 digits)
        sign, digits, exponent = Decimal(text.replace(",", "")).as_tuple()
        mantissa = "".join(map(str, digits)).lstrip("0")
        if not mantissa:
            return "0"
        stripped = mantissa.rstrip("0")
        return f"{'-' if sign else ''}{stripped}e{int(exponent) + len(mantissa) - len(stripped)}"
    return text if case_sensitive else text.casefold()


def answer_matches(
    completion: str,
    reference: str,
    *,
    tag: str = "answer",
    think_tag: str = "think",
    numeric: bool = True,
    case_sensitive: bool = False,
) -> bool:
    """Whether ``completion``'s one final answer equals ``reference`` (see
    ``AnswerMatchRewardConfig``); an empty answer never matches."""
    answer = final_answer(completion, tag=tag, think_tag=think_tag)
    if not answer:
        return False
    norm = {"numeric": numeric, "case_sensitive": case_sensitive}
    return normalize_answer(answer, **norm) == normalize_answer(reference, **norm)


class AnswerMatchReward:
    """1.0 per completion whose final answer equals its reference, else 0.0.

    Raises:
        ValueError: a reference is missing or blank (names the prompt): scoring against
            ``""`` would make an empty answer the best policy.
    """

    def __init__(self, config: AnswerMatchRewardConfig) -> None:
        self.options = {
            "tag": config.tag,
            "think_tag": config.think_tag,
            "numeric": config.numeric,
            "case_sensitive": config.case_sensitive,
        }

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[str | None],
    ) -> Tensor:
        for prompt, ref in zip(prompts, references):
            if ref is None or not str(ref).strip():
                raise ValueError(
                    f"answer_match needs a reference answer, but prompt {prompt!r} has "
                    f"{ref!r}: give its example an 'answer' (or a completion), or the "
                    "prompt batch its 'references'"
                )
        hits = [
            answer_matches(c, str(r), **self.options)  # type: ignore[arg-type]
            for c, r in zip(completions, references)
        ]
        return torch.tensor(hits, dtype=torch.float32)  # (N,)


class FormatReward:
    """1.0 per completion that is exactly ``<think>…</think><answer>…</answer>``: one block
    of each, no tag inside either, whitespace allowed around them."""

    def __init__(self, config: FormatRewardConfig) -> None:
        t, a = re.escape(config.think_tag), re.escape(config.answer_tag)
        body = rf"(?:(?!</?{t}>|</?{a}>).)*"  # any text holding neither tag
        self.pattern = re.compile(rf"\s*<{t}>{body}</{t}>\s*<{a}>{body}</{a}>\s*", flags=re.DOTALL)

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
    "final_answer",
    "normalize_answer",
]
