"""The ``markov_text`` task's config, apart from the task (``splice_recipes.markov_text``) so
that registering the task imports neither torch nor the task's module: plugin discovery
stays light (``tests/test_broken_plugin.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from splice.config import ComponentConfig

#: Largest rule table built (contexts); 36 characters at order 3 is 46,656.
MAX_CONTEXTS = 200_000


class MarkovTextTaskConfig(ComponentConfig):
    """Sequences of a random order-``order`` Markov chain over ``alphabet``.

    Attributes:
        alphabet: the characters (distinct; the tokenizer must know them).
        order: characters of context each next character depends on.
        successors: possible next characters per context (their probabilities are random).
        length: characters per sequence; the first ``order`` are the prompt.
        language_seed: which chain (its rule table); sequences are drawn by the sample seed.
        held_out_fraction / dev_fraction: shares of the sequence space (by hash) set aside
            as the reported held-out split and the dev split (for choosing hyperparameters).
    """

    type: Literal["markov_text"] = "markov_text"
    alphabet: str = Field(default="abcdefghijklmnopqrstuvwxyz0123456789", min_length=2)
    order: PositiveInt = 2
    successors: PositiveInt = 4
    length: PositiveInt = 16
    language_seed: NonNegativeInt = 0
    held_out_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    dev_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sizes(self) -> MarkovTextTaskConfig:
        n = len(self.alphabet)
        if len(set(self.alphabet)) != n:
            raise ValueError(f"alphabet {self.alphabet!r} repeats a character")
        if self.successors > n:
            raise ValueError(f"successors={self.successors} exceeds the alphabet's {n} characters")
        if self.length <= self.order:
            raise ValueError(
                f"length={self.length} must exceed order={self.order} (the prompt's characters)"
            )
        if n**self.order > MAX_CONTEXTS:
            raise ValueError(
                f"{n}**{self.order} = {n**self.order:,} contexts exceeds {MAX_CONTEXTS:,}: "
                "use a smaller alphabet or order"
            )
        if self.held_out_fraction + self.dev_fraction >= 1.0:
            raise ValueError(
                f"held_out_fraction + dev_fraction = "
                f"{self.held_out_fraction + self.dev_fraction} leaves nothing to train on"
            )
        return self
