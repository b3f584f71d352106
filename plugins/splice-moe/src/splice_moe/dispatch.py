"""Sorted dispatch: group the ``N * k`` token-to-expert assignments by expert.

One stable ``argsort`` of the flat expert ids puts each expert's assignments in a
contiguous run, in token order; the layer then gathers those rows once, runs each
expert on its run, and scatters (index-adds) the weighted results back once.
With a capacity, an expert keeps its first ``capacity`` assignments in token order
and the rest are dropped (they contribute zero to that token's output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Dispatch:
    """Where each kept assignment goes.

    Attributes:
        assignment: ``(M,)`` index into the flat ``(N * k)`` assignments, sorted by expert.
        token: ``(M,)`` token row of each kept assignment (``assignment // k``).
        counts: ``(E,)`` kept assignments per expert (the slice lengths).
        routed: ``(E,)`` assignments per expert before dropping (the load).
    """

    assignment: Tensor
    token: Tensor
    counts: Tensor
    routed: Tensor

    @property
    def dropped(self) -> Tensor:
        """Number of dropped assignments (a 0-dim tensor)."""
        return self.routed.sum() - self.counts.sum()


def capacity_of(
    capacity_factor: float | None, n_tokens: int, top_k: int, n_experts: int
) -> int | None:
    """Assignments an expert may take: ``ceil(factor * N * k / E)``; None when dropless."""
    if capacity_factor is None:
        return None
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor={capacity_factor} must be > 0 (or None for dropless)")
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def sort_by_expert(top_idx: Tensor, n_experts: int, capacity: int | None = None) -> Dispatch:
    """Group assignments by expert; ``top_idx (N, k)`` -> ``Dispatch``."""
    k = top_idx.shape[-1]
    flat = top_idx.reshape(-1)  # (N*k,)
    order = torch.argsort(flat, stable=True)  # (N*k,) expert-major, token order inside
    routed = torch.bincount(flat, minlength=n_experts)  # (E,)
    counts = routed
    if capacity is not None:
        starts = routed.cumsum(0) - routed  # (E,) first sorted position of each expert
        rank = torch.arange(flat.numel(), device=flat.device) - starts[flat[order]]
        order = order[rank < capacity]  # still sorted by expert
        counts = routed.clamp(max=capacity)
    return Dispatch(assignment=order, token=order // k, counts=counts, routed=routed)
