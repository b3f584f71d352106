"""Deterministic synthetic arithmetic problems with verifiable answers.

``"37+5="`` -> ``"42"``. Train, dev and held-out sets never share a problem: a
problem's split is decided by a hash of its operands, so it does not depend
on sampling order or on how many examples are drawn. Evaluation sets are drawn
without replacement: ``sample("held_out", n)`` is ``n`` distinct problems (every
problem of the split once when ``n`` exceeds it), checked disjoint from training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Literal

from splice.data.examples import Example

Op = Literal["+", "-", "*"]
Split = Literal["train", "dev", "held_out"]
# Operand pairs up to this many are enumerated for an evaluation split (1-2 digits: 1e4);
# larger spaces (3+ digits) draw distinct problems from the split's stream instead.
ENUMERATE_LIMIT = 100_000


def _hash_fraction(a: int, b: int, op: str) -> float:
    digest = hashlib.sha256(f"{a}{op}{b}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32


def _is_held_out(a: int, b: int, op: str, fraction: float) -> bool:
    return _hash_fraction(a, b, op) < fraction


def split_of(h: float, held_out_fraction: float, dev_fraction: float) -> Split:
    """The split of a problem whose operand hash is ``h`` in [0, 1): held-out below
    ``held_out_fraction``, dev in the next ``dev_fraction``, train above."""
    if h < held_out_fraction:
        return "held_out"
    return "dev" if h < held_out_fraction + dev_fraction else "train"


def check_disjoint(evaluated: list[Example], train_prompts: set[str], *, where: str) -> None:
    """Raise if an evaluation example's prompt is also a training prompt.

    Raises:
        RuntimeError: naming ``where`` and the shared prompts (a split bug, never bad input).
    """
    shared = sorted({ex.prompt for ex in evaluated} & train_prompts)
    if shared:
        raise RuntimeError(
            f"{where}: {len(shared)} evaluation problems are also training "
            f"problems, e.g. {shared[:3]}"
        )


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
        held_out_fraction: share of all problems reserved for evaluation (the reported split).
        dev_fraction: share reserved for choosing hyperparameters (split ``"dev"``; 0: none).
        reverse_answer: write the answer's digits least-significant first, the order
            in which carries are computed (makes addition far easier for small models).
        chain_of_thought: (``+`` only) the completion is DeepSeek-R1's format, the digit
            sums worked out least-significant first, then the answer:
            ``37+25=`` -> ``<think>7+5=12,3+2+1=6</think><answer>62</answer>``
            (``answer`` stays ``62``, for rule-based rewards).
        reasoning_share: (with ``chain_of_thought``) the share of drawn examples that work
            the carries out; the others answer at once after an empty think block,
            ``<think></think><answer>62</answer>`` (a start that mostly answers directly,
            from which RL can learn to reason longer).
        separator: the prompt's last character(s), ``"="`` by default (``"37+25="``); with
            ``chain_of_thought``, a cue of its own can mark a form that always reasons
            (``37+25:`` with ``reasoning_share=1.0`` beside ``37+25=`` answered directly).
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
        dev_fraction: float = 0.0,
        reverse_answer: bool = False,
        chain_of_thought: bool = False,
        separator: str = "=",
        answer_digits: str = "0123456789",
        reasoning_share: float = 1.0,
    ) -> None:
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
        if not 0.0 <= dev_fraction < 1.0 - held_out_fraction:
            raise ValueError(
                f"dev_fraction must be in [0, 1 - held_out_fraction), got "
                f"{dev_fraction} with held_out_fraction={held_out_fraction}"
            )
        solve(1, 1, op)
        if chain_of_thought and op != "+":
            raise ValueError(f"chain_of_thought is defined for op '+' only, got {op!r}")
        if chain_of_thought and reverse_answer:
            raise ValueError("chain_of_thought and reverse_answer cannot be combined")
        if not 0.0 <= reasoning_share <= 1.0:
            raise ValueError(f"reasoning_share must be in [0, 1], got {reasoning_share}")
        self.chain_of_thought, self.reasoning_share = chain_of_thought, reasoning_share
        self.op, self.min_digits, self.max_digits = op, min_digits, max_digits
        self.held_out_fraction = held_out_fraction
        self.dev_fraction = dev_fraction
        self._pairs_by_split: dict[str, list[tuple[int, int]]] | None = None
        self._train_prompts: set[str] | None = None
        self.reverse_answer = reverse_answer
        if not separator:
            raise ValueError("separator must be at least one character")
        if len(answer_digits) != 10 or len(set(answer_digits)) != 10 or "-" in answer_digits:
            raise ValueError(
                f"answer_digits={answer_digits!r}: need 10 distinct characters, no '-'"
            )
        if chain_of_thought and answer_digits != "0123456789":
            raise ValueError("chain_of_thought uses the default answer_digits")
        self.separator = separator
        self._digits = str.maketrans("0123456789", answer_digits)

    def _operand(self, rng: random.Random) -> int:
        digits = rng.randint(self.min_digits, self.max_digits)
        low = 0 if digits == 1 else 10 ** (digits - 1)
        return rng.randint(low, 10**digits - 1)

    def format(self, a: int, b: int, *, reason: bool = True) -> Example:
        """The example ``a op b``; with ``chain_of_thought``, ``reason=False`` leaves the
        think block empty."""
        answer = str(solve(a, b, self.op))
        if self.chain_of_thought:
            steps = addition_steps(a, b) if reason else ""
            completion = f"<think>{steps}</think><answer>{answer}</answer>"
            prompt = f"{a}{self.op}{b}{self.separator}"
            return Example(prompt=prompt, completion=completion, answer=answer)
        completion = (answer[::-1] if self.reverse_answer else answer).translate(self._digits)
        prompt = f"{a}{self.op}{b}{self.separator}"
        return Example(prompt=prompt, completion=completion, answer=completion)

    def split_of(self, a: int, b: int) -> Split:
        """Which split the problem ``a op b`` belongs to."""
        return split_of(_hash_fraction(a, b, self.op), self.held_out_fraction, self.dev_fraction)

    def _split_of_prompt(self, ex: Example) -> Split:
        a, _, b = ex.prompt[: -len(self.separator)].partition(self.op)
        return self.split_of(int(a), int(b))

    def _check_split(self, split: str) -> None:
        if split not in ("train", "dev", "held_out"):
            raise ValueError(f"split must be 'train', 'dev' or 'held_out', got {split!r}")
        if split == "dev" and self.dev_fraction == 0.0:
            raise ValueError("split 'dev' is empty: set the task's dev_fraction > 0")

    def _operand_range(self) -> range:
        low = 0 if self.min_digits == 1 else 10 ** (self.min_digits - 1)
        return range(low, 10**self.max_digits)

    def _pairs(self, split: Split) -> list[tuple[int, int]]:
        """Every operand pair of ``split``, in increasing order (computed once per task)."""
        if self._pairs_by_split is None:
            r = self._operand_range()
            if len(r) ** 2 > ENUMERATE_LIMIT:
                raise ValueError(
                    f"{len(r) ** 2:,} operand pairs for max_digits={self.max_digits}: too many "
                    f"to enumerate (limit {ENUMERATE_LIMIT:,})"
                )
            by: dict[str, list[tuple[int, int]]] = {"train": [], "dev": [], "held_out": []}
            for a in r:
                for b in r:
                    by[self.split_of(a, b)].append((a, b))
            self._pairs_by_split = by
        return self._pairs_by_split[split]

    def all_examples(self, split: Split) -> list[Example]:
        """Every problem of ``split`` once, operands in increasing order (a finite set).

        Raises:
            ValueError: the operand space is too large to enumerate (over ``ENUMERATE_LIMIT``
                pairs), or an unknown/empty split.
        """
        self._check_split(split)
        return [self.format(a, b) for a, b in self._pairs(split)]

    def examples(self, split: Split, *, seed: int = 0) -> Iterator[Example]:
        """An endless deterministic stream of problems from one split (problems repeat)."""
        self._check_split(split)
        rng = random.Random(f"{seed}-{split}-{self.op}-{self.min_digits}-{self.max_digits}")
        # its own generator: the problems drawn are the same whatever the share
        reasons = random.Random(f"{seed}-{split}-reasoning")
        while True:
            a, b = self._operand(rng), self._operand(rng)
            reason = reasons.random() < self.reasoning_share
            if self.split_of(a, b) == split:
                yield self.format(a, b, reason=reason)

    def sample(self, split: Split, n: int, *, seed: int = 0) -> list[Example]:
        """``n`` problems of ``split``.

        ``"train"``: the first ``n`` of the split's stream (problems may repeat, as in
        training). ``"dev"`` / ``"held_out"``: ``n`` *distinct* problems, a seeded draw
        without replacement from the whole split, or every problem of the split once (in
        a seeded order) when ``n`` exceeds it; checked disjoint from the training problems.
        """
        if split == "train":
            it = self.examples(split, seed=seed)
            return [next(it) for _ in range(n)]
        self._check_split(split)
        rng = random.Random(f"{seed}-{split}-{self.op}-{self.min_digits}-{self.max_digits}")
        r = self._operand_range()
        if len(r) ** 2 <= ENUMERATE_LIMIT:
            pairs = list(self._pairs(split))
            rng.shuffle(pairs)
            chosen = [self.format(a, b) for a, b in pairs[:n]]
            if self._train_prompts is None:
                self._train_prompts = {self.format(a, b).prompt for a, b in self._pairs("train")}
            train = self._train_prompts
        else:  # a huge space: distinct draws from the split's stream; disjoint by hash
            chosen, seen, it = [], set(), self.examples(split, seed=seed)
            while len(chosen) < n:
                ex = next(it)
                if ex.prompt not in seen:
                    seen.add(ex.prompt)
                    chosen.append(ex)
            train = {ex.prompt for ex in chosen if self._split_of_prompt(ex) == "train"}
        check_disjoint(chosen, train, where=f"arithmetic {self.op} {split}")
        return chosen
