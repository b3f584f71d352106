"""Run several ``nn.Linear`` layers that read the same input as one matmul, while decoding.

Keeping Q/K/V (or gate/up) as separate ``nn.Linear`` modules keeps checkpoints in the
Hugging Face layout and lets adapters wrap one projection alone (LoRA on q and v only).
At decode time, though, each small matmul pays a fixed per-call cost, so inside
``fused_projections()`` (which ``splice.generation.generate`` enters) the weights are
concatenated once and every step runs one larger matmul.

The concatenation is valid only inside that scope: weights cannot change during one
``generate`` call, but they can between calls, and tensor version counters are no proof
that they did not (the fused AdamW kernel updates parameters without bumping them).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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


class FusedLinears:
    """``outputs(x) -> [linear_i(x) for i]``, fused into one matmul inside ``fused_projections``.

    Calls each module separately outside that scope, when gradients are on, or when a
    module is not a plain ``nn.Linear`` (e.g. wrapped by an adapter or quantized).
    """

    def __init__(self, *linears: nn.Module) -> None:
        self.linears = linears
        self._scope = 0
        self._weight: Tensor | None = None
        self._bias: Tensor | None = None

    def _fusable(self) -> bool:
        return (
            _active_scope.get() != 0
            and not torch.is_grad_enabled()
            and all(type(m) is nn.Linear for m in self.linears)
        )

    def _fused(self) -> tuple[Tensor, Tensor | None]:
        scope = _active_scope.get()
        if self._scope != scope or self._weight is None:
            linears = [m for m in self.linears if isinstance(m, nn.Linear)]
            self._weight = torch.cat([m.weight for m in linears])  # (sum out, in)
            if all(m.bias is None for m in linears):
                self._bias = None
            else:
                self._bias = torch.cat(
                    [m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                     for m in linears]
                )  # fmt: skip
            self._scope = scope
        return self._weight, self._bias

    def __call__(self, x: Tensor) -> list[Tensor]:
        if not self._fusable():
            return [m(x) for m in self.linears]
        weight, bias = self._fused()
        sizes = [m.out_features for m in self.linears if isinstance(m, nn.Linear)]
        return list(F.linear(x, weight, bias).split_with_sizes(sizes, dim=-1))
