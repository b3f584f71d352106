"""Token embedding whose backward reuses its gradient memory from step to step.

``nn.Embedding``'s backward builds a fresh dense ``(V, D)`` gradient each step; on CPU,
with a 32k vocabulary, allocating and zero-filling those 64 MiB (a page fault per 4 KiB)
costs about 8x the scatter-add itself. Here the gradient is a scratch buffer (see
``splice.nn.scratch``) that becomes the parameter's ``.grad`` and is reused once
``zero_grad`` has dropped it. Same layout, state dict and forward as ``nn.Embedding``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from splice.nn.scratch import scratch


class _EmbeddingFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, ids: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.weight_meta = (weight.shape, weight.dtype)  # type: ignore[attr-defined]
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[None, Tensor]:
        (ids,) = ctx.saved_tensors  # type: ignore[attr-defined]
        shape, dtype = ctx.weight_meta  # type: ignore[attr-defined]
        grad_weight = scratch("embedding.grad", shape, dtype, grad.device).zero_()  # (V, D)
        # index_add_ adds rows in index order: deterministic, like the dense backward.
        grad_weight.index_add_(0, ids.reshape(-1), grad.reshape(-1, shape[1]).to(dtype))
        return None, grad_weight


class Embedding(nn.Embedding):
    """``nn.Embedding`` ``ids (...) -> (..., D)`` with a gradient kept in reusable memory.

    Options that change the backward (``padding_idx``, ``max_norm``, ``sparse``) and
    non-CPU devices (which have caching allocators) use ``nn.Embedding`` unchanged.
    """

    def forward(self, input: Tensor) -> Tensor:
        own_backward = self.padding_idx is not None or self.max_norm is not None or self.sparse
        if (
            own_backward
            or self.weight.device.type != "cpu"
            or not (torch.is_grad_enabled() and self.weight.requires_grad)
        ):
            return super().forward(input)
        out: Tensor = _EmbeddingFunction.apply(input, self.weight)
        return out


__all__ = ["Embedding"]
