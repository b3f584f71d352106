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
        return F.linear(x, self._weight, self._bias)

    def __call__(self, owner: nn.Module, x: Tensor) -> list[Tensor]:
        y = self.fused(owner, x)
        if y is None:
            return [owner._modules[name](x) for name in self.names]  # type: ignore[misc]
        return [y] if len(self._sizes) == 1 else list(y.split_with_sizes(self._sizes, dim=-1))

    def one(self, owner: nn.Module, x: Tensor) -> Tensor:
        """The output of a single-name ``FusedLinears`` (e.g. an output projection)."""
        y = self.fused(owner, x)
        return y if y is not None else owner._modules[self.names[0]](x)  # type: ignore[misc]
