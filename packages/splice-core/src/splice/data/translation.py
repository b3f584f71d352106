"""A built-in synthetic "translation" task: numerals to English number words, and back.

``"407"`` -> ``"four hundred seven"``; ``"12019"`` -> ``"twelve thousand nineteen"``.
The mapping is fully rule-based, so held-out exact match measures whether a model
learned the rules rather than memorised pairs. Train and held-out sets never share
a number: a number's split is decided by a hash of the number itself, so it does not
depend on sampling order or on how many examples are drawn (as in ``data/arithmetic``).

Only lowercase letters, digits and spaces appear, so ``CharTokenizer`` covers it.
This module imports no torch: its config is registered with the task registry.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Literal

from splice.data.configs import MAX_NUMBER_WORDS_DIGITS as MAX_DIGITS  # up to 999 999
from splice.data.configs import NumberWordsTaskConfig
from splice.data.examples import Example

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(TENS[tens])
        if ones:
            words.append(ONES[ones])
    elif rest:
        words.append(ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """English words of ``0 <= n < 10**6``, without "and" or hyphens: ``371 -> "three hundred seventy one"``.

    Raises:
        ValueError: ``n`` outside ``[0, 999999]``.
    """
    if not 0 <= n < 10**MAX_DIGITS:
        raise ValueError(f"n must be in [0, {10**MAX_DIGITS - 1}], got {n}")
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = [*_below_thousand(thousands), "thousand"] if thousands else []
    return " ".join(words + _below_thousand(rest))


def _is_held_out(n: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"number-words-{n}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < fraction


class NumberWordsTask:
    """Numbers of ``min_digits..max_digits`` digits and their English words.

    ``direction="to_words"`` gives ``Example(prompt="407", completion="four hundred seven")``;
    ``"to_digits"`` swaps the two. The prompt is the bare source text: an encoder-decoder
    reads it as its source, a decoder-only model appends a separator first
    (:func:`with_separator`).
    """

    def __init__(self, config: NumberWordsTaskConfig | None = None) -> None:
        self.config = config or NumberWordsTaskConfig()

    def format(self, n: int) -> Example:
        digits, words = str(n), number_to_words(n)
        src, tgt = (digits, words) if self.config.direction == "to_words" else (words, digits)
        return Example(prompt=src, completion=tgt, answer=tgt)

    def _number(self, rng: random.Random) -> int:
        # Digit count first, then the number: short numbers are not swamped by long ones.
        digits = rng.randint(self.config.min_digits, self.config.max_digits)
        low = 0 if digits == 1 else 10 ** (digits - 1)
        return rng.randint(low, 10**digits - 1)

    def examples(self, split: Literal["train", "held_out"], *, seed: int = 0) -> Iterator[Example]:
        """An endless deterministic stream of examples from one split (numbers may repeat)."""
        if split not in ("train", "held_out"):
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        c = self.config
        rng = random.Random(f"{seed}-{split}-number-words-{c.min_digits}-{c.max_digits}")
        want_held_out = split == "held_out"
        while True:
            n = self._number(rng)
            if _is_held_out(n, c.held_out_fraction) == want_held_out:
                yield self.format(n)

    def sample(
        self, split: Literal["train", "held_out"], n: int, *, seed: int = 0
    ) -> list[Example]:
        """``"train"``: the first ``n`` examples of the split's stream (numbers may repeat).
        ``"held_out"``: ``n`` *distinct* numbers, a seeded draw without replacement from the
        whole split (every one once, in a seeded order, when ``n`` exceeds it), checked
        disjoint from the training numbers."""
        if split == "train":
            it = self.examples(split, seed=seed)
            return [next(it) for _ in range(n)]
        if split != "held_out":
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        pool = self.all_examples("held_out")
        random.Random(f"{seed}-held_out-number-words").shuffle(pool)
        chosen = pool[:n]
        c = self.config
        leaked = [
            ex.prompt
            for ex in chosen
            if not _is_held_out(
                int(ex.prompt if c.direction == "to_words" else ex.answer), c.held_out_fraction
            )
        ]
        if leaked:
            raise RuntimeError(f"number_words held_out: {leaked[:3]} are training numbers")
        return chosen

    def all_examples(self, split: Literal["train", "held_out"]) -> list[Example]:
        """Every number of the split once, in increasing order (a finite evaluation set)."""
        c = self.config
        low = 0 if c.min_digits == 1 else 10 ** (c.min_digits - 1)
        want_held_out = split == "held_out"
        return [
            self.format(n)
            for n in range(low, 10**c.max_digits)
            if _is_held_out(n, c.held_out_fraction) == want_held_out
        ]


def with_separator(examples: list[Example], separator: str = "=") -> list[Example]:
    """Decoder-only framing: ``prompt + separator`` so the model knows where the source ends."""
    return [Example(ex.prompt + separator, ex.completion, ex.answer) for ex in examples]


def build_number_words(config: NumberWordsTaskConfig, ctx: object = None) -> NumberWordsTask:
    return NumberWordsTask(config)


__all__ = [
    "NumberWordsTask",
    "NumberWordsTaskConfig",
    "build_number_words",
    "number_to_words",
    "with_separator",
]
