"""What every retriever does, and what a search returns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words: the token unit of BM25 and of the dense hash encoder."""
    return _WORD.findall(text.lower())


@dataclass
class Hits:
    """Top-k passages per query.

    Attributes:
        ids: ``(Q, k)`` int64 passage indices, best first; ``-1`` where fewer than ``k`` exist.
        scores: ``(Q, k)`` float32, higher is better (comparable within one retriever only).
    """

    ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.shape != self.scores.shape or self.ids.ndim != 2:
            raise ValueError(
                f"ids {self.ids.shape} and scores {self.scores.shape}: need equal (Q, k)"
            )


@runtime_checkable
class Retriever(Protocol):
    """``index`` passages, ``search`` queries, ``save`` to / ``load_state`` from a folder.

    ``splice_rag.store.save_retriever`` writes the config beside what ``save`` writes, and
    ``load_retriever`` rebuilds the retriever from the config and calls ``load_state``.
    """

    config: Any

    def index(self, passages: Sequence[str]) -> None: ...

    def search(self, queries: Sequence[str], k: int) -> Hits: ...

    def save(self, folder: Path) -> None: ...

    def load_state(self, folder: Path) -> None: ...


@runtime_checkable
class Trainable(Protocol):
    """A retriever that learns from ``(question, passage)`` pairs before it indexes."""

    def fit(self, pairs: Sequence[tuple[str, str]]) -> dict[str, float]: ...


__all__ = ["Hits", "Retriever", "Trainable", "words"]
