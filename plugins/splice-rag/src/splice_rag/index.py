"""A faiss vector index of unit vectors (inner product = cosine), saved in faiss's own format."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VectorIndex:
    """Exact inner-product search (``faiss.IndexFlatIP``) over ``(N, D)`` float32 vectors.

    Args:
        dim: the vectors' width ``D``.
    """

    FILE = "index.faiss"

    def __init__(self, dim: int) -> None:
        import faiss

        self.dim = dim
        self._index = faiss.IndexFlatIP(dim)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append ``(N, D)`` vectors; their ids continue from ``len(self)``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of shape {vectors.shape}; expected (N, {self.dim})")
        self._index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (Q, k) float32, ids (Q, k) int64)``, best first; id ``-1`` past the end."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries of shape {queries.shape}; expected (Q, {self.dim})")
        scores, ids = self._index.search(queries, k)
        return scores, ids.astype(np.int64)

    def save(self, folder: Path) -> Path:
        import faiss

        path = Path(folder) / self.FILE
        faiss.write_index(self._index, str(path))
        return path

    @classmethod
    def load(cls, folder: Path) -> VectorIndex:
        import faiss

        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no saved faiss index")
        raw = faiss.read_index(str(path))
        index = cls(raw.d)
        index._index = raw
        return index


__all__ = ["VectorIndex"]
