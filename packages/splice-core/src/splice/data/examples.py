"""The unit every dataset yields: a prompt, a completion, and a verifiable answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One supervised example.

    Attributes:
        prompt: text the model conditions on (no loss on it in SFT).
        completion: text the model must produce (loss on it in SFT).
        answer: the verifiable answer a reward/evaluator compares against
            (usually ``completion`` stripped); empty when not verifiable.
    """

    prompt: str
    completion: str
    answer: str = ""
