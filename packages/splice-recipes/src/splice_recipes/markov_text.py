"""The ``markov_text`` task: text from a random order-n Markov chain, a language whose rules
only capacity can hold.

Each context of ``order`` characters has ``successors`` possible next characters with fixed
random probabilities, drawn once from ``language_seed``: ``len(alphabet) ** order`` rules in
all (36 characters, order 2: 1,296 contexts x 4 successors). There is no algorithm to find:
a model predicts the next character only as well as it has stored the table, and its
held-out loss falls toward the chain's own (``MarkovTextTask.optimal_loss``) as it stores
more of it. That makes it a test of capacity, of what a mixture of experts adds at equal
active compute, rather than of reasoning.

A sequence is ``length`` characters: the first ``order`` (drawn uniformly) are the prompt,
the rest the completion (trained on and scored; the chain decides every one of them). A
sequence's split is decided by a hash of its text (``splice.data.tasks.hash_fraction``):
held-out below ``held_out_fraction``, dev in the next ``dev_fraction``, train above, so no
sequence is in two splits; evaluation draws (``sample("held_out" | "dev", n)``) hold ``n``
distinct sequences. Torch-free.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from typing import Literal

from splice.data.arithmetic import split_of
from splice.data.examples import Example
from splice.data.tasks import hash_fraction

from splice_recipes.markov_text_config import MarkovTextTaskConfig

Split = Literal["train", "dev", "held_out"]
SPLITS: tuple[Split, ...] = ("train", "dev", "held_out")
#: Draws in a row without a new sequence after which an evaluation split counts as used up.
EXHAUSTED = 2_000


class MarkovTextTask:
    """The chain and its three splits (see the module docstring).

    Attributes:
        config: the task's config.
        rules: per context (``order`` characters), its successors and their cumulative
            probabilities (the last is 1.0).
    """

    def __init__(self, config: MarkovTextTaskConfig) -> None:
        self.config = config
        rng = random.Random(f"markov-text-{config.language_seed}")
        self.rules: dict[str, tuple[str, list[float]]] = {}
        for ctx in itertools.product(config.alphabet, repeat=config.order):
            nxt = "".join(rng.sample(config.alphabet, config.successors))
            weights = [rng.expovariate(1.0) for _ in nxt]  # a flat Dirichlet draw
            total = sum(weights)
            self.rules["".join(ctx)] = (nxt, list(itertools.accumulate(w / total for w in weights)))

    def split_of(self, ex: Example) -> Split:
        """The split a sequence belongs to (by the hash of its text)."""
        cfg = self.config
        return split_of(hash_fraction(ex), cfg.held_out_fraction, cfg.dev_fraction)

    def _sequence(self, rng: random.Random) -> Example:
        cfg = self.config
        text = "".join(rng.choice(cfg.alphabet) for _ in range(cfg.order))
        while len(text) < cfg.length:
            nxt, cum = self.rules[text[-cfg.order :]]
            text += nxt[min(bisect.bisect_right(cum, rng.random()), len(nxt) - 1)]
        return Example(prompt=text[: cfg.order], completion=text[cfg.order :])

    def examples(self, split: Split, *, seed: int = 0) -> Iterator[Example]:
        """Endless stream of ``split``'s sequences (drawn from the chain, the other splits'
        rejected), deterministic in ``seed``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split == "dev" and self.config.dev_fraction == 0:
            raise ValueError("markov_text: no dev split (dev_fraction is 0)")
        rng = random.Random(f"markov-text-{self.config.language_seed}-{split}-{seed}")
        while True:
            ex = self._sequence(rng)
            if self.split_of(ex) == split:
                yield ex

    def sample(self, split: Split, n: int, *, seed: int = 0) -> list[Example]:
        """``n`` sequences of ``split``; distinct for ``dev`` and ``held_out`` (evaluation
        sets never score a sequence twice), fewer when the split holds fewer (a draw stops
        after ``EXHAUSTED`` draws in a row bring no new sequence)."""
        stream = self.examples(split, seed=seed)
        if split == "train":
            return list(itertools.islice(stream, n))
        seen: dict[str, Example] = {}
        misses = 0
        while len(seen) < n and misses < EXHAUSTED:
            ex = next(stream)
            key = ex.prompt + ex.completion
            misses = misses + 1 if key in seen else 0
            seen.setdefault(key, ex)
        return list(seen.values())

    def log_prob(self, ex: Example) -> float:
        """Natural-log probability of ``ex``'s completion under the chain, given its prompt.

        Raises:
            ValueError: the completion takes a step the chain never takes (names it).
        """
        order, text = self.config.order, ex.prompt + ex.completion
        total = 0.0
        for i in range(len(ex.prompt), len(text)):
            nxt, cum = self.rules[text[i - order : i]]
            j = nxt.find(text[i])
            if j < 0:
                raise ValueError(
                    f"{text!r}: {text[i - order : i]!r} is never followed by {text[i]!r}"
                )
            total += math.log(cum[j] - (cum[j - 1] if j else 0.0))
        return total

    def optimal_loss(self, examples: Sequence[Example]) -> float:
        """The chain's own loss on ``examples``: mean nats per target token, counting each
        completion's characters and its end-of-sequence token (which the chain's fixed
        length makes certain: 0 nats), as an SFT loss counts them. No model scores lower
        in expectation."""
        nats = -sum(self.log_prob(ex) for ex in examples)
        return nats / sum(len(ex.completion) + 1 for ex in examples)


def check_split(task: MarkovTextTask, examples: Sequence[Example], split: Split) -> None:
    """Raise unless every one of ``examples`` belongs to ``split`` (an evaluation set drawn
    from the dev or held-out split shares no sequence with training or with the other).

    Raises:
        RuntimeError: naming the split and the first strays (a split bug, never bad input).
    """
    strays = [ex.prompt + ex.completion for ex in examples if task.split_of(ex) != split]
    if strays:
        raise RuntimeError(
            f"markov_text: {len(strays)} of {len(examples)} sequences drawn as {split!r} "
            f"belong to another split, e.g. {strays[:3]}"
        )


def build_markov_text(config: MarkovTextTaskConfig, ctx: object = None) -> MarkovTextTask:
    return MarkovTextTask(config)


__all__ = ["MarkovTextTask", "MarkovTextTaskConfig", "build_markov_text", "check_split"]
