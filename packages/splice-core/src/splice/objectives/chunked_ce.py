"""Cross-entropy of ``hidden @ W^T`` against targets without holding the ``(N, V)`` logits.

With a vocabulary of ``V`` = 32k-150k, the logits of a batch are often the largest
tensor of a training step (``N * V * 4`` bytes in float32, kept again for backward by
``log_softmax``). Here the projection is done ``chunk_size`` rows at a time:

* head is a plain ``nn.Linear``: a custom autograd function computes, per chunk, the
  loss *and* its gradients (``softmax - onehot`` is all the backward of CE needs), then
  drops the chunk's logits. Backward only scales the stored gradients, which have
  the size of the inputs (``N x D`` and ``V x D``), never ``N x V``. No recompute.
* any other head (LoRA-wrapped, quantized, FSDP-sharded): each chunk runs under
  non-reentrant activation checkpointing, so its logits are freed after the forward
  and recomputed, one chunk at a time, in backward (one extra head forward).

Both return the *sum* of per-token losses as float32; callers divide by the count.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _ce_sum(head: nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    logits = head(hidden).float()  # (C, V), float32 for a stable log-softmax
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


class _LinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden_i @ W^T + b, y_i)`` with gradients computed chunk-wise in forward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        chunk_size: int,
    ) -> Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        grad_h = torch.zeros_like(hidden) if need_h else None  # (N, D)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # (V, D)
        grad_b = (
            torch.zeros_like(bias, dtype=torch.float32) if need_b and bias is not None else None
        )
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]  # (C, D)
            y = targets[start : start + chunk_size]  # (C,)
            valid = y != IGNORE_INDEX
            y_safe = torch.where(valid, y, 0)
            logits = F.linear(h, weight, bias).float()  # (C, V)
            lse = torch.logsumexp(logits, dim=-1)  # (C,)
            picked = logits.gather(1, y_safe[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if grad_h is None and grad_w is None and grad_b is None:
                continue
            # d CE / d logits = softmax - onehot; computed in place over the logits buffer.
            g = logits.sub_(lse[:, None]).exp_()
            g[torch.arange(g.shape[0], device=g.device), y_safe] -= 1.0
            g *= valid[:, None]
            gw = g.to(weight.dtype)
            if grad_h is not None:
                grad_h[start : start + chunk_size] = gw @ weight  # (C, D)
            if grad_w is not None:
                grad_w += (gw.T @ h.to(weight.dtype)).float()  # (V, D)
            if grad_b is not None:
                grad_b += g.sum(0)
        # torch accepts None entries (saved_tensors gives them back); its stub says Tensor only.
        ctx.save_for_backward(grad_h, grad_w, grad_b)  # type: ignore[arg-type]
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)  # type: ignore[attr-defined]
        return total

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors  # type: ignore[attr-defined]
        w_dtype, b_dtype = ctx.dtypes  # type: ignore[attr-defined]
        return (
            grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None,
            (grad_w * grad_out).to(w_dtype) if grad_w is not None else None,
            (grad_b * grad_out).to(b_dtype) if grad_b is not None else None,
            None,
            None,
        )


def _is_plain_linear(head: nn.Module) -> bool:
    """A bare ``nn.Linear`` whose forward we may replace by ``F.linear`` (no hooks, no subclass)."""
    return (
        type(head) is nn.Linear
        and not head._forward_hooks
        and not head._forward_pre_hooks
        and not getattr(head, "parametrizations", None)
    )


def linear_cross_entropy(
    hidden: Tensor, head: nn.Module, targets: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets``, chunked over rows.

    Args:
        hidden: ``(N, D)`` hidden states.
        head: the vocabulary projection ``(N, D) -> (N, V)`` (usually ``model.lm_head``).
        targets: ``(N,)`` long class ids; ``-100`` rows are ignored.
        chunk_size: rows per chunk; None (or ``>= N``) projects everything at once.

    Returns:
        A float32 scalar: the *sum* of the per-row losses (divide by the token count).
    """
    n = hidden.shape[0]
    if chunk_size is None or chunk_size >= n:
        return _ce_sum(head, hidden, targets)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}")
    chunks = range(0, n, chunk_size)
    if not torch.is_grad_enabled():  # evaluation: no gradients to keep, just loop
        return sum(
            (
                _ce_sum(head, hidden[s : s + chunk_size], targets[s : s + chunk_size])
                for s in chunks
            ),
            torch.zeros((), device=hidden.device),
        )
    if _is_plain_linear(head):
        assert isinstance(head, nn.Linear)
        out = _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_size)
        return out  # type: ignore[no-any-return]
    total = torch.zeros((), device=hidden.device)
    for s in chunks:
        total = total + checkpoint(
            _ce_sum,
            head,
            hidden[s : s + chunk_size],
            targets[s : s + chunk_size],
            use_reentrant=False,
        )
    return total


__all__ = ["IGNORE_INDEX", "linear_cross_entropy"]
