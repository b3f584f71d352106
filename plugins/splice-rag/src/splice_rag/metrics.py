"""Retrieval metrics over ranked passage ids: recall@k and mean reciprocal rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _relevant_sets(relevant: Sequence[int | Sequence[int]]) -> list[set[int]]:
    return [{int(r)} if isinstance(r, int | np.integer) else {int(x) for x in r} for r in relevant]


def recall_at_k(ranked: np.ndarray, relevant: Sequence[int | Sequence[int]], k: int) -> float:
    """Mean over queries of ``|relevant ∩ top-k| / |relevant|``.

    Args:
        ranked: ``(Q, >= k)`` passage ids, best first (``-1`` = none).
        relevant: per query, the relevant id or ids.
    """
    if ranked.shape[0] != len(relevant):
        raise ValueError(f"{ranked.shape[0]} rankings but {len(relevant)} relevance sets")
    if ranked.shape[1] < k:
        raise ValueError(f"recall@{k} needs >= {k} ranked ids per query, got {ranked.shape[1]}")
    sets = _relevant_sets(relevant)
    return float(np.mean([len(s & set(row[:k].tolist())) / len(s) for row, s in zip(ranked, sets)]))


def mrr(ranked: np.ndarray, relevant: Sequence[int | Sequence[int]]) -> float:
    """Mean reciprocal rank of the first relevant id (0 when none is ranked)."""
    if ranked.shape[0] != len(relevant):
        raise ValueError(f"{ranked.shape[0]} rankings but {len(relevant)} relevance sets")
    total = 0.0
    for row, s in zip(ranked, _relevant_sets(relevant)):
        hit = next((i for i, d in enumerate(row.tolist()) if d in s), None)
        total += 0.0 if hit is None else 1.0 / (hit + 1)
    return total / max(len(relevant), 1)


__all__ = ["mrr", "recall_at_k"]
