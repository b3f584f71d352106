"""Configs of the built-in rewards and of a weighted reward term (torch-free).

A reward config is a ``ComponentConfig`` registered under kind ``"reward"``; a
``RewardTermConfig`` wraps one with a weight and a logging name, and
``splice.rewards.build_rewards`` turns a list of terms into a ``RewardSet``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, field_validator

from splice.config import ComponentConfig, RewardField, SpliceConfig


class AnswerMatchRewardConfig(ComponentConfig):
    """1.0 when the completion's one final answer equals the reference answer, else 0.0.

    One answer is read, never a search for something that matches (see
    ``splice.rewards.verifiers.final_answer``): the text after the last ``</think>``
    must hold exactly one ``<tag>…</tag>`` block, whose content is the answer; a
    completion with no think or answer tag at all is itself the answer (tasks that
    answer directly). Anything else (two answer blocks, an unclosed one, a think block
    left open) has no answer and scores 0.

    Both sides are normalised the same way: numbers compare by value (thousands
    separators, exponents, signs and leading zeros do not matter: ``"1,000"``,
    ``"+1e3"`` and ``"01000.0"`` all equal ``"1000"``); other text compares with runs of
    whitespace collapsed and, unless ``case_sensitive``, ignoring case (``"paris"``
    equals ``"Paris"``). A missing or blank reference is an error naming the prompt.

    Attributes:
        tag: the XML-like tag that marks the final answer (DeepSeek-R1 style ``answer``).
        think_tag: the tag of the reasoning block whose last close starts the answer part.
        numeric: compare numbers by value (``"42.0"`` matches ``"42"``); False compares text.
        case_sensitive: compare words with their case (``"paris"`` then differs from ``"Paris"``).
    """

    type: Literal["answer_match"] = "answer_match"
    tag: str = Field(default="answer", min_length=1, pattern=r"^[A-Za-z_][\w-]*$")
    think_tag: str = Field(default="think", min_length=1, pattern=r"^[A-Za-z_][\w-]*$")
    numeric: bool = True
    case_sensitive: bool = False


class FormatRewardConfig(ComponentConfig):
    """1.0 when the whole completion is ``<think>…</think><answer>…</answer>`` (DeepSeek-R1).

    Exactly one block of each, in that order, with no tag inside either; whitespace
    between and around them is allowed. A completion ``answer_match`` reads no answer
    from (two answer blocks, an unclosed tag) is always a format miss.

    Attributes:
        think_tag / answer_tag: the two tag names.
    """

    type: Literal["format"] = "format"
    think_tag: str = Field(default="think", min_length=1, pattern=r"^[A-Za-z_][\w-]*$")
    answer_tag: str = Field(default="answer", min_length=1, pattern=r"^[A-Za-z_][\w-]*$")


class LengthPenaltyRewardConfig(ComponentConfig):
    """``-scale * max(0, length - target)``: zero up to ``target``, then linear in the excess.

    Attributes:
        target: the length that costs nothing.
        scale: penalty per unit over ``target``.
        unit: count ``"chars"`` or whitespace-separated ``"words"``.
    """

    type: Literal["length_penalty"] = "length_penalty"
    target: NonNegativeInt = 256
    scale: NonNegativeFloat = 0.001
    unit: Literal["chars", "words"] = "chars"


class CallableRewardConfig(ComponentConfig):
    """Any Python function named by a dotted path ``"package.module:function"``.

    The function is called as ``fn(prompts, completions, references, **kwargs)`` and must
    return one float per completion (a sequence or a 1-D tensor). **This imports and runs
    the named code**: a config that names a callable executes the user's own code, exactly as
    a recipe file does; only run configs you trust.

    Attributes:
        path: ``"package.module:function"`` (attribute chains like ``"mod:Class.method"`` work).
        kwargs: extra keyword arguments passed on every call (JSON values).
    """

    type: Literal["callable"] = "callable"
    path: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _dotted(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"path must look like 'package.module:function', got {value!r}")
        return value


class RewardTermConfig(SpliceConfig):
    """One weighted reward in a sum: ``total = Σ weight_i * reward_i``.

    Attributes:
        reward: the reward's config (a registered ``reward`` tag, e.g. ``{"type": "format"}``).
        weight: its multiplier in the total (may be negative or zero: zero logs it only).
        name: the name it is logged under (``reward/<name>``); defaults to the reward's tag.
    """

    reward: RewardField
    weight: float = 1.0
    name: str | None = None

    @property
    def label(self) -> str:
        """The name this term is logged under."""
        return self.name if self.name is not None else self.reward.type


__all__ = [
    "AnswerMatchRewardConfig",
    "CallableRewardConfig",
    "FormatRewardConfig",
    "LengthPenaltyRewardConfig",
    "RewardTermConfig",
]
