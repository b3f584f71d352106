"""Sorted dispatch: group the ``N * k`` token-to-expert assignments by expert.

One stable ``argsort`` of the flat expert ids puts each expert's assignments in a
contiguous run, in token order. The layer gathers those rows once, runs each expert on
its run, and gathers the results back once, per assignment (``combine``). Both moves
are row gathers whose gradients are row gathers too: the sort is a permutation, and
the adjoint of a permutation is its inverse, so no scatter (``index_add``) runs forward
or backward. With a capacity, an expert keeps its first ``capacity`` assignments in
token order and the rest are dropped (they contribute zero to that token's output).

Layouts of the expert input rows:

- compact: ``M`` rows, expert ``e``'s run right after expert ``e - 1``'s (grouped GEMM,
  or a loop over the runs);
- padded: ``E * C`` rows, expert ``e``'s run at ``e * C``, the tail of each block padding
  (one batched matmul ``(E, C, D) @ (E, D, H)``; padding rows take token 0 and their
  outputs are never read, so they add exactly zero to every gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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
        source: ``(R,)`` token row that each expert input row reads (``token`` when compact).
        slot: ``(N * k,)`` expert row of each flat assignment; ``R`` (one past the end)
            when it was dropped.
        origin: ``(R,)`` flat assignment each expert row holds; ``N * k`` for padding rows.
        block: rows per expert ``C`` in the padded layout, None in the compact one.
        may_drop: whether ``slot`` can hold the dropped marker ``R``.
    """

    assignment: Tensor
    token: Tensor
    counts: Tensor
    routed: Tensor
    source: Tensor
    slot: Tensor
    origin: Tensor
    block: int | None
    may_drop: bool

    @property
    def rows(self) -> int:
        """``R``: expert input rows (``M`` compact, ``E * C`` padded)."""
        return self.source.shape[0]

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


def sort_by_expert(
    top_idx: Tensor,
    n_experts: int,
    capacity: int | None = None,
    *,
    max_padding: float | None = None,
) -> Dispatch:
    """Group assignments by expert; ``top_idx (N, k)`` -> ``Dispatch``.

    Args:
        capacity: keep at most this many assignments per expert (None: dropless).
        max_padding: use the padded layout when it adds at most this fraction of rows
            over the compact one (reads the longest run on the host); None: compact.
    """
    k = top_idx.shape[-1]
    flat = top_idx.reshape(-1)  # (N*k,)
    n_flat = flat.numel()
    order = torch.argsort(flat, stable=True)  # (N*k,) expert-major, token order inside
    routed = torch.bincount(flat, minlength=n_experts)  # (E,)
    counts = routed
    starts = routed.cumsum(0) - routed  # (E,) first sorted position of each expert
    expert = flat[order]  # (N*k,) expert of each sorted assignment
    rank = torch.arange(n_flat, device=flat.device) - starts[expert]  # place inside its run
    if capacity is not None:
        keep = rank < capacity
        order, expert, rank = order[keep], expert[keep], rank[keep]  # still sorted by expert
        counts = routed.clamp(max=capacity)
    token = order // k
    m = order.numel()
    block = None
    if max_padding is not None and m > 0:
        longest = int(counts.max())  # host sync: the padded shape depends on it
        if n_experts * longest <= (1.0 + max_padding) * m:
            block = longest
    if block is None:  # compact: expert row i holds sorted assignment i
        rows = torch.arange(m, device=flat.device)
        source, origin = token, order
    else:
        rows = expert * block + rank
        source = token.new_zeros(n_experts * block).index_copy_(0, rows, token)
        origin = order.new_full((n_experts * block,), n_flat).index_copy_(0, rows, order)
    slot = rows.new_full((n_flat,), source.shape[0]).index_copy_(0, order, rows)
    return Dispatch(
        assignment=order,
        token=token,
        counts=counts,
        routed=routed,
        source=source,
        slot=slot,
        origin=origin,
        block=block,
        may_drop=capacity is not None,
    )


class _Gather(torch.autograd.Function):
    """``out = ext(x)[index]`` whose gradient is a gather too: ``ext(g)[inverse]`` summed over ``group``.

    ``ext`` appends one zero row when the index may point one past the end. ``inverse``
    lists, for each row ``i`` of ``x``, the ``group`` output rows read from it (in rows
    ``i * group ... i * group + group - 1``); output rows it does not list must carry a
    zero gradient (padding) or none (dropped).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        index: Tensor,
        inverse: Tensor,
        group: int,
        index_past_end: bool,
        inverse_past_end: bool,
    ) -> Tensor:
        ctx.save_for_backward(inverse)
        ctx.group, ctx.n, ctx.inverse_past_end = group, x.shape[0], inverse_past_end
        return _with_zero_row(x, index_past_end).index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        g = _with_zero_row(grad, ctx.inverse_past_end).index_select(0, inverse)
        if ctx.group > 1:
            g = g.view(ctx.n, ctx.group, -1).sum(dim=1)
        return g, None, None, None, None, None


def _with_zero_row(x: Tensor, extend: bool) -> Tensor:
    return torch.cat([x, x.new_zeros(1, x.shape[1])]) if extend else x


def gather_inputs(h: Tensor, d: Dispatch, top_k: int) -> Tensor:
    """``h (N, D)`` -> expert input rows ``(R, D)``; the backward sums each token's ``k`` rows."""
    out: Tensor = _Gather.apply(h, d.source, d.slot, top_k, False, d.may_drop)
    return out


def gather_outputs(ys: Tensor, d: Dispatch) -> Tensor:
    """Expert output rows ``ys (R, D)`` -> one row per flat assignment ``(N * k, D)``, zero if dropped."""
    out: Tensor = _Gather.apply(ys, d.slot, d.origin, 1, d.may_drop, d.block is not None)
    return out
