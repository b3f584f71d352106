"""Run a module's ``nn.Linear`` children with the least per-call cost while decoding.

Keeping Q/K/V (or gate/up) as separate ``nn.Linear`` modules keeps checkpoints in the
Hugging Face layout and lets adapters wrap one projection alone (LoRA on q and v only).
At decode time, though, each small matmul pays a fixed per-call cost, so inside
``fused_projections()`` (which ``splice.generation.generate`` enters) the weights of
projections that read the same input are concatenated once and every step runs one
larger matmul; a single projection skips the module call and calls ``F.linear``.

The cache is valid only inside that scope: weights cannot change during one
``generate`` call, but they can between calls, and tensor version counters are no proof
that they did not (the fused AdamW kernel updates parameters without bumping them).
Projections are looked up on their owner by name at every call, so an adapter that
replaces ``owner.q_proj`` after construction is always the module that runs.

On CPU those decode matmuls have only a few rows (one token per sequence), and the BLAS
kernel behind ``F.linear``'s ``x @ W^T`` is slow for that shape: ``few_rows_linear`` runs
the same product as ``W @ x^T`` instead, a different BLAS case that streams the weight
about 1.4x faster at 8 rows in float32 (see docs/benchmarks.md, generation section). In
bfloat16 it is the other way round: oneDNN's bf16 kernel behind ``F.linear`` runs the
small model's decode matmuls about 2x faster than ``W @ x^T`` (1 thread, 8 rows), so
only float32 weights take the transposed case.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules import module as _module_globals

_scope_ids = itertools.count(1)
# Up to this many rows (tokens) a CPU linear runs as ``W @ x^T``; beyond it (prefill,
# training-sized batches) BLAS's usual ``x @ W^T`` kernel is the faster one.
FEW_ROWS = 32
#: Weight dtypes for which ``W @ x^T`` was measured faster than ``F.linear`` (not bf16).
TRANSPOSED_DTYPES = (torch.float32,)
# 0: not inside fused_projections(). A ContextVar, so concurrent generate calls in other
# threads or tasks never share (or invalidate) each other's scope.
_active_scope: ContextVar[int] = ContextVar("splice_fused_scope", default=0)


@contextmanager
def fused_projections() -> Iterator[None]:
    """Within this block (gradients off), FusedLinears run one concatenated matmul."""
    token = _active_scope.set(next(_scope_ids))
    try:
        yield
    finally:
        _active_scope.reset(token)


def _plain(m: nn.Module) -> bool:
    """A bare ``nn.Linear`` whose call would run nothing but ``F.linear`` (no hooks)."""
    return (
        type(m) is nn.Linear
        and not m._forward_hooks
        and not m._forward_pre_hooks
        and not _module_globals._global_forward_hooks
        and not _module_globals._global_forward_pre_hooks
    )


def few_rows_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for ``x (..., K)``, ``weight (N, K)``: ``(..., N)``.

    With at most ``FEW_ROWS`` rows on CPU it computes ``(weight @ x^T)^T``: the same sums
    (up to float rounding) through the BLAS case that handles a skinny right-hand side
    well. Anything else (CUDA, many rows, a weight dtype outside ``TRANSPOSED_DTYPES``, an
    input dtype other than the weight's) is ``F.linear``.
    """
    k = x.shape[-1]
    rows = x.numel() // k if k else 0
    if (
        x.device.type != "cpu"
        or not 0 < rows <= FEW_ROWS
        or x.dtype != weight.dtype
        or weight.dtype not in TRANSPOSED_DTYPES
    ):
        return F.linear(x, weight, bias)
    xt = x.reshape(rows, k).t()  # (K, rows), a view
    if bias is None:
        y = torch.mm(weight, xt)  # (N, rows)
    else:
        y = torch.addmm(bias.unsqueeze(1), weight, xt)
    # Contiguous (rows, N) again: later views (heads, splits) expect the usual layout.
    return y.t().contiguous().view(*x.shape[:-1], weight.shape[0])


class FusedLinears:
    """``fused(owner, x) -> [owner.<name>(x) for name in names]``, one matmul inside the scope.

    Calls each module normally outside ``fused_projections``, when gradients are on, or
    when a module is not a plain hook-free ``nn.Linear`` (e.g. wrapped by an adapter or
    quantized), so training and adapters always see the modules themselves.

    Args:
        names: attribute names of the owner's ``nn.Linear`` children that read one input.
    """

    def __init__(self, *names: str) -> None:
        if not names:
            raise ValueError("FusedLinears needs at least one projection name")
        self.names = names
        self._scope = 0
        self._weight: Tensor | None = None  # None while the owner's modules are not fusable
        self._bias: Tensor | None = None
        self._sizes: list[int] = []

    def _prepare(self, modules: list[nn.Module], scope: int) -> None:
        """Build this scope's (concatenated) weight, or mark the modules as not fusable."""
        self._scope, self._weight, self._bias = scope, None, None
        if not all(_plain(m) for m in modules):
            return
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        self._sizes = [m.out_features for m in linears]
        if len(linears) == 1:  # nothing to concatenate: reuse the parameters themselves
            self._weight, self._bias = linears[0].weight, linears[0].bias
            return
        self._weight = torch.cat([m.weight for m in linears])  # (sum out, in)
        if any(m.bias is not None for m in linears):
            self._bias = torch.cat(
                [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                 for m in linears]
            )  # fmt: skip

    def fused(self, owner: nn.Module, x: Tensor) -> Tensor | None:
        """``(..., sum of out_features)``: all projections as one output, or None when the
        modules must run one by one (outside the scope, gradients on, or not plain)."""
        if torch.compiler.is_compiling():  # the scope's ContextVar and cache are not
            return None  # traceable: compiled code runs the projections one by one
        scope = _active_scope.get()
        if scope == 0 or torch.is_grad_enabled():
            return None
        if self._scope != scope:
            modules = [owner._modules[name] for name in self.names]  # skips Module.__getattr__
            self._prepare([m for m in modules if m is not None], scope)
        if self._weight is None:
            return None
        return few_rows_linear(x, self._weight, self._bias)

    def joint(self, owner: nn.Module, x: Tensor) -> Tensor | None:
        """``(..., sum of out_features)`` through weights concatenated in this call, or None
        when a module is not a plain hook-free ``nn.Linear``.

        Unlike ``fused`` this works with gradients on (the concatenation is part of the
        graph, so each weight gets its own gradient) and outside the scope: one GEMM forward
        and one for the input gradient instead of one per projection plus their sum. The
        concatenation copies the weights every call, so use it when ``x`` has many rows
        (training, prefill), not per decoded token.
        """
        modules = [owner._modules[name] for name in self.names]
        if not all(m is not None and _plain(m) for m in modules):
            return None
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        weight = torch.cat([m.weight for m in linears])  # (sum out, in)
        bias = None
        if any(m.bias is not None for m in linears):
            bias = torch.cat(
                [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                 for m in linears]
            )  # fmt: skip
        return F.linear(x, weight, bias)

    def __call__(self, owner: nn.Module, x: Tensor) -> list[Tensor]:
        y = self.fused(owner, x)
        if y is None:
            return [_run(owner._modules[name], x) for name in self.names]
        return [y] if len(self._sizes) == 1 else list(y.split_with_sizes(self._sizes, dim=-1))

    def one(self, owner: nn.Module, x: Tensor) -> Tensor:
        """The output of a single-name ``FusedLinears`` (e.g. an output projection)."""
        y = self.fused(owner, x)
        return y if y is not None else _run(owner._modules[self.names[0]], x)


def _run(module: nn.Module | None, x: Tensor) -> Tensor:
    """``module(x)``; in compiled code without gradients (the compiled decode step), a plain
    ``nn.Linear`` runs as ``few_rows_linear`` instead: the projections stay separate there
    (concatenating weights inside the graph would copy them every step), but each one still
    takes the faster skinny-matmul case."""
    if (
        isinstance(module, nn.Linear)
        and torch.compiler.is_compiling()
        and not torch.is_grad_enabled()
        and _plain(module)
    ):
        return few_rows_linear(x, module.weight, module.bias)
    y: Tensor = module(x)  # type: ignore[misc]
    return y
