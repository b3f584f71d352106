"""BM25 through ``bm25s``: a sparse term-score matrix, saved as ``.npy`` + JSON (no pickles)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splice_rag.configs import BM25RetrieverConfig
from splice_rag.interfaces import Hits, words


class BM25Retriever:
    """Okapi BM25 over ``words(text)``.

    Args:
        config: ``k1``, ``b`` and the bm25s ``method``.
    """

    def __init__(self, config: BM25RetrieverConfig, ctx: object = None) -> None:
        self.config = config
        self._bm25 = None
        self.size = 0

    def index(self, passages: Sequence[str]) -> None:
        import bm25s

        if not passages:
            raise ValueError("bm25: no passages to index")
        c = self.config
        self._bm25 = bm25s.BM25(k1=c.k1, b=c.b, method=c.method)
        # an empty passage still needs a token for bm25s; it matches no query word
        self._bm25.index([words(p) or ["\x00"] for p in passages], show_progress=False)
        self.size = len(passages)

    def search(self, queries: Sequence[str], k: int) -> Hits:
        if self._bm25 is None:
            raise RuntimeError("bm25: search before index (call index(passages) or load_state)")
        top = min(k, self.size)
        ids, scores = self._bm25.retrieve(
            [words(q) or ["\x00"] for q in queries], k=top, show_progress=False, n_threads=1
        )
        return _pad(np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32), k)

    def save(self, folder: Path) -> None:
        if self._bm25 is None:
            raise RuntimeError("bm25: nothing to save before index")
        self._bm25.save(str(folder / "bm25"), allow_pickle=False)

    def load_state(self, folder: Path) -> None:
        import bm25s

        path = folder / "bm25"
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no saved BM25 index")
        self._bm25 = bm25s.BM25.load(str(path), allow_pickle=False)
        self.size = int(self._bm25.scores["num_docs"])


def _pad(ids: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """Widen ``(Q, k')`` results to ``(Q, k)`` with id ``-1`` / score ``-inf``."""
    missing = k - ids.shape[1]
    if missing > 0:
        ids = np.pad(ids, ((0, 0), (0, missing)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf)
    return Hits(ids=ids, scores=scores)


__all__ = ["BM25Retriever"]
