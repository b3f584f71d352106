"""The unit every dataset yields: a prompt, a completion, and a verifiable answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One supervised example.

    Attributes:
        prompt: text the model conditions on (no loss on it in SFT).
        completion: text the model must produce (loss on it in SFT).
        answer: the verifiable answer a reward/evaluator compares against
            (usually ``completion`` stripped); empty when not verifiable.
        model_inputs: more inputs of the model for this one prompt, by keyword, e.g. a
            vision-language model's ``{"images": (C, H, W)}``; an online run's
            ``PromptBatches`` stacks them into ``(P, ...)`` rows that travel with the
            rollout (``splice.rl.rollout``). Not part of equality or hashing.
    """

    prompt: str
    completion: str
    answer: str = ""
    model_inputs: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
