"""Hybrid retrieval: several retrievers' top candidates fused into one ranking.

``rrf``: reciprocal rank fusion, ``score(d) = sum_i w_i / (rrf_k + rank_i(d))`` (rank from 1;
a passage a member did not return adds nothing) — needs no score calibration. ``score``: each
member's scores min-max normalised per query to [0, 1], then ``sum_i w_i * s_i(d)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splice_rag.configs import HybridRetrieverConfig
from splice_rag.interfaces import Hits, Trainable


def fuse(
    members: Sequence[Hits], weights: Sequence[float], k: int, *, fusion: str, rrf_k: float
) -> Hits:
    """Fuse the members' ``(Q, depth)`` hits into ``(Q, k)``; ties break by passage id."""
    n_queries = members[0].ids.shape[0]
    ids = np.full((n_queries, k), -1, dtype=np.int64)
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    for q in range(n_queries):
        total: dict[int, float] = {}
        for hits, w in zip(members, weights):
            row_ids, row_scores = hits.ids[q], hits.scores[q]
            valid = row_ids >= 0
            if fusion == "rrf":
                parts = {int(d): w / (rrf_k + r + 1) for r, d in enumerate(row_ids) if d >= 0}
            else:
                s = row_scores[valid]
                lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 0.0)
                span = hi - lo if hi > lo else 1.0
                parts = {
                    int(d): w * (float(v) - lo) / span
                    for d, v in zip(row_ids[valid], row_scores[valid])
                }
            for d, v in parts.items():
                total[d] = total.get(d, 0.0) + v
        best = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:k]
        for j, (d, v) in enumerate(best):
            ids[q, j], scores[q, j] = d, v
    return Hits(ids=ids, scores=scores)


class HybridRetriever:
    """Members built from ``config.retrievers``; ``fit`` trains those that train."""

    def __init__(self, config: HybridRetrieverConfig, members: list) -> None:
        self.config = config
        self.members = members
        self.weights = config.weights or [1.0] * len(members)

    def fit(self, pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, member in enumerate(self.members):
            if isinstance(member, Trainable):
                out.update({f"{i}.{k}": v for k, v in member.fit(pairs).items()})
        return out

    def index(self, passages: Sequence[str]) -> None:
        for member in self.members:
            member.index(passages)

    def search(self, queries: Sequence[str], k: int) -> Hits:
        # Each member contributes its top ``depth`` whatever ``k`` is: fusing deeper lists
        # for a larger k would change the fused scores, so a top-3 would not be the first 3
        # of a top-10 (RagTask.ranked slices one cached deep search). Past the members'
        # candidates the hits are padding (-1).
        found = [m.search(queries, self.config.depth) for m in self.members]
        c = self.config
        return fuse(found, self.weights, k, fusion=c.fusion, rrf_k=c.rrf_k)

    def save(self, folder: Path) -> None:
        from splice_rag.store import save_retriever

        for i, member in enumerate(self.members):
            save_retriever(member, folder / f"member-{i}")

    def load_state(self, folder: Path) -> None:
        from splice_rag.store import load_retriever

        self.members = [load_retriever(folder / f"member-{i}") for i in range(len(self.members))]


def build_hybrid(config: HybridRetrieverConfig, ctx: object = None) -> HybridRetriever:
    from splice.registry import get_registry

    registry = get_registry()
    return HybridRetriever(config, [registry.build("retriever", c, ctx) for c in config.retrievers])


__all__ = ["HybridRetriever", "build_hybrid", "fuse"]
