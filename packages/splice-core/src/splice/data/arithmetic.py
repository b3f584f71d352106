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


class ArithmeticTask:
    """Problems ``a op b`` with operands of ``min_digits..max_digits`` digits.

    Args:
        op: ``"+"``, ``"-"`` or ``"*"``.
        min_digits / max_digits: difficulty, by operand digit count.
        held_out_fraction: share of all problems reserved for evaluation.
        reverse_answer: write the answer's digits least-significant first, the order
            in which carries are computed (makes addition far easier for small models).
    """

    def __init__(
        self,
        op: Op = "+",
        *,
        min_digits: int = 1,
        max_digits: int = 2,
        held_out_fraction: float = 0.1,
        reverse_answer: bool = False,
    ) -> None:
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
        solve(1, 1, op)
        self.op, self.min_digits, self.max_digits = op, min_digits, max_digits
        self.held_out_fraction = held_out_fraction
        self.reverse_answer = reverse_answer

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        low = 0 if digits == 1 else 10 ** (digits - 1)
        return rng.randint(low, 10**digits - 1)

    def format(self, a: int, b: int) -> Example:
        answer = str(solve(a, b, self.op))
        completion = answer[::-1] if self.reverse_answer else answer
        return Example(prompt=f"{a}{self.op}{b}=", completion=completion, answer=completion)

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
