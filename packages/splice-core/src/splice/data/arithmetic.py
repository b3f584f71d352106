"""Deterministic synthetic arithmetic problems with verifiable answers.

``"37+5="`` -> ``"42"``. Train and held-out sets never share a problem: a
problem's split is decided by a hash of its operands, so it does not depend
on sampling order or on how many examples are drawn.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Literal

from splice.data.examples import Example

Op = Literal["+", "-", "*"]


def _is_held_out(a: int, b: int, op: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"{a}{op}{b}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < fraction


def solve(a: int, b: int, op: str) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operator {op!r}; expected one of '+', '-', '*'")


def addition_steps(a: int, b: int) -> str:
    """Column addition, least-significant digit first: ``37, 25 -> "7+5=12,3+2+1=6"``."""
    steps: list[str] = []
    carry = 0
    while a or b or not steps:
        x, y = a % 10, b % 10
        total = x + y + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}")
        carry, a, b = total // 10, a // 10, b // 10
    return ",".join(steps)


class ArithmeticTask:
    """Problems ``a op b`` with operands of ``min_digits..max_digits`` digits.

    Args:
        op: ``"+"``, ``"-"`` or ``"*"``.
        min_digits / max_digits: difficulty, by operand digit count.
        held_out_fraction: share of all problems reserved for evaluation.
        reverse_answer: write the answer's digits least-significant first, the order
            in which carries are computed (makes addition far easier for small models).
        chain_of_thought: (``+`` only) the completion is DeepSeek-R1's format, the digit
            sums worked out least-significant first, then the answer:
            ``37+25=`` -> ``<think>7+5=12,3+2+1=6</think><answer>62</answer>``
            (``answer`` stays ``62``, for rule-based rewards).
        separator: the prompt's last character(s), ``"="`` by default (``"37+25="``).
        answer_digits: the ten characters the answer's digits 0-9 are written with
            (``"abcdefghij"``: ``37+25=`` -> ``gc``); ``"0123456789"`` by default.
    """

    def __init__(
        self,
        op: Op = "+",
        *,
        min_digits: int = 1,
        max_digits: int = 2,
        held_out_fraction: float = 0.1,
        reverse_answer: bool = False,
        chain_of_thought: bool = False,
        separator: str = "=",
        answer_digits: str = "0123456789",
    ) -> None:
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
        solve(1, 1, op)
        if chain_of_thought and op != "+":
            raise ValueError(f"chain_of_thought is defined for op '+' only, got {op!r}")
        if chain_of_thought and reverse_answer:
            raise ValueError("chain_of_thought and reverse_answer cannot be combined")
        self.chain_of_thought = chain_of_thought
        self.op, self.min_digits, self.max_digits = op, min_digits, max_digits
        self.held_out_fraction = held_out_fraction
        self.reverse_answer = reverse_answer
        if not separator:
            raise ValueError("separator must be at least one character")
        if len(answer_digits) != 10 or len(set(answer_digits)) != 10 or "-" in answer_digits:
            raise ValueError(
                f"answer_digits={answer_digits!r}: need 10 distinct characters, no '-'"
            )
        if chain_of_thought and (separator != "=" or answer_digits != "0123456789"):
            raise ValueError("chain_of_thought uses the default separator and answer_digits")
        self.separator = separator
        self._digits = str.maketrans("0123456789", answer_digits)

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        low = 0 if digits == 1 else 10 ** (digits - 1)
        return rng.randint(low, 10**digits - 1)

    def format(self, a: int, b: int) -> Example:
        answer = str(solve(a, b, self.op))
        if self.chain_of_thought:
            completion = f"<think>{addition_steps(a, b)}</think><answer>{answer}</answer>"
            return Example(prompt=f"{a}{self.op}{b}=", completion=completion, answer=answer)
        completion = (answer[::-1] if self.reverse_answer else answer).translate(self._digits)
        prompt = f"{a}{self.op}{b}{self.separator}"
        return Example(prompt=prompt, completion=completion, answer=completion)

    def examples(self, split: Literal["train", "held_out"], *, seed: int = 0) -> Iterator[Example]:
        """An endless deterministic stream of problems from one split."""
        rng = random.Random(f"{seed}-{split}-{self.op}-{self.min_digits}-{self.max_digits}")
        want_held_out = split == "held_out"
        while True:
            a, b = self._operand(rng), self._operand(rng)
            if _is_held_out(a, b, self.op, self.held_out_fraction) == want_held_out:
                yield self.format(a, b)

    def sample(
        self, split: Literal["train", "held_out"], n: int, *, seed: int = 0
    ) -> list[Example]:
        """The first ``n`` problems of a split's stream."""
        it = self.examples(split, seed=seed)
        return [next(it) for _ in range(n)]
