"""Cross-entropy of ``hidden @ W^T`` against targets, fused with its gradient.

With a vocabulary of ``V`` = 32k-150k, the logits of a batch are often the largest
tensor of a training step, and the textbook ``F.cross_entropy(logits.float())`` touches
them five more times (a float32 copy, the log-softmax, the NLL gradient, the log-softmax
backward, the cast back for the matmul). When the head is a plain ``nn.Linear``, the
gradient of CE w.r.t. the logits is just ``softmax - onehot``, so it is formed in forward,
in place over the logits, in the compute dtype (bf16 under autocast; the softmax itself is
taken in float32 a few rows at a time), and backward is two matmuls:

* ``chunk_size=None`` (default): one ``(N, V)`` logits tensor in the compute dtype, which
  becomes the gradient and is kept for backward.
* ``chunk_size`` set: ``chunk_size`` rows at a time, the gradients w.r.t. the inputs are
  accumulated in forward and each chunk's logits dropped: memory is ``N x D`` and
  ``V x D``, never ``N x V``. No recompute.
* any other head (LoRA-wrapped, quantized, FSDP-sharded): the textbook loss; with
  ``chunk_size`` each chunk runs under non-reentrant activation checkpointing, so its
  logits are freed after the forward and recomputed, one chunk at a time, in backward.

All return the *sum* of per-token losses as float32; callers divide by the count.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from splice.nn.scratch import scratch

IGNORE_INDEX = -100


def _ce_sum(head: nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    logits = head(hidden).float()  # (C, V), float32 for a stable log-softmax
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would compute in here: autocast's if it is on, else the weight's."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


#: Rows of float32 softmax work per block: ~8 MiB at V = 32k, so the block stays in cache
#: and the allocator reuses it (a large fresh tensor costs a page fault per 4 KiB on CPU).
_WORK_BYTES = 8 << 20


def _softmax_grad_(
    logits: Tensor, targets: Tensor, hidden: Tensor, weight: Tensor, bias: Tensor | None
) -> Tensor:
    """Turn ``logits`` into ``d CE / d logits = softmax - onehot`` in place; return the CE sum.

    Args:
        logits: ``(C, V)`` ``hidden @ weight^T + bias`` in the compute dtype; overwritten.
        targets: ``(C,)`` class ids, ``-100`` rows ignored (their gradient rows become 0).
        hidden, weight, bias: the projection's inputs (compute dtype), only used to redo the
            logits of the rare rows whose target probability underflows float32.

    The softmax is taken in float32, block by block of rows (for a low-precision compute
    dtype the block is copied to a float32 buffer and the result rounded back once), so
    no float32 ``(C, V)`` tensor is ever made. The loss of a row is ``-log p_target``;
    the target entry of the gradient, ``p - 1``, is written from the float32 ``p`` so that
    it does not lose ``1 - p`` to cancellation in bf16.
    """
    n, vocab = logits.shape
    valid = targets != IGNORE_INDEX
    y = torch.where(valid, targets, 0)
    p_target = torch.empty(n, dtype=torch.float32, device=logits.device)
    low_precision = logits.dtype != torch.float32
    rows = max(1, _WORK_BYTES // (4 * vocab))
    work = torch.empty(min(rows, n), vocab, device=logits.device) if low_precision else None
    for s in range(0, n, rows):
        block = logits[s : s + rows]
        w = work[: block.shape[0]].copy_(block) if work is not None else block
        torch.softmax(w, dim=-1, out=w)  # in place: the kernel reads a row before writing it
        idx = torch.arange(w.shape[0], device=w.device)
        p = w[idx, y[s : s + rows]]
        p_target[s : s + rows] = p
        w[idx, y[s : s + rows]] = p - 1.0
        if work is not None:
            block.copy_(w)
    loss = -p_target.log()
    # p underflows float32 only when the target's logit is ~87 below the log-sum-exp: redo
    # those rows' logits and take lse - logit exactly (rare; one host sync per call).
    tiny = (p_target < 1e-30) & valid
    if bool(tiny.any()):
        r = tiny.nonzero().squeeze(1)
        x = F.linear(hidden[r], weight, bias).float()
        loss[r] = torch.logsumexp(x, dim=-1) - x.gather(1, y[r, None]).squeeze(1)
    if not bool(valid.all()):
        logits[~valid] = 0
    return (loss * valid).sum()


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(hidden_i @ W^T + b, y_i)`` in one piece: the gradient w.r.t. the logits is
    formed in forward, in place, in the compute dtype; backward is two matmuls.

    Compared with ``F.cross_entropy(F.linear(...).float())`` under bf16 autocast this skips
    the float32 copy of the ``(N, V)`` logits, the log-softmax output, its backward and the
    NLL gradient: ``N x V`` is touched as one bf16 tensor that becomes the gradient.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
    ) -> Tensor:
        dtype = _compute_dtype(hidden, weight)
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.to(dtype)
            w = weight
            if weight.dtype != dtype:  # the (V, D) cast and the (N, V) logits are the step's
                # largest tensors: reuse their memory across steps (see splice.nn.scratch)
                w = scratch("ce.weight", weight.shape, dtype, weight.device).copy_(weight)
            b = bias.to(dtype) if bias is not None else None
            n, vocab = h.shape[0], w.shape[0]
            grad_logits = scratch("ce.logits", (n, vocab), dtype, h.device)  # (N, V)
            if b is None:
                torch.mm(h, w.T, out=grad_logits)
            else:
                torch.addmm(b, h, w.T, out=grad_logits)
            total = _softmax_grad_(grad_logits, targets, h, w, b)  # now softmax - onehot
        ctx.save_for_backward(grad_logits, hidden, w)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)  # type: ignore[attr-defined]
        return total

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        g, hidden, w = ctx.saved_tensors  # type: ignore[attr-defined]
        h_dtype, w_dtype, b_dtype = ctx.dtypes  # type: ignore[attr-defined]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        scale = grad_out.float()
        grad_h = grad_w = grad_b = None
        with torch.autocast(g.device.type, enabled=False):
            if need_h:
                grad_h = (g @ w).to(h_dtype).mul_(scale)  # (N, D)
            if need_w:
                # Scaling the (N, D) input rather than the (V, D) product saves a pass over it.
                scaled = (hidden * scale).to(g.dtype)
                shape = (g.shape[1], scaled.shape[1])  # (V, D)
                # The (V, D) gradient becomes the parameter's .grad until zero_grad drops it;
                # from scratch memory, the next step's gradient reuses the same pages.
                grad_w = scratch("ce.grad_w", shape, w_dtype, g.device)
                if w_dtype == g.dtype:
                    torch.mm(g.T, scaled, out=grad_w)
                else:  # a low-precision product, cast once into the gradient
                    product = scratch("ce.product", shape, g.dtype, g.device)
                    grad_w.copy_(torch.mm(g.T, scaled, out=product))
            if need_b:
                grad_b = g.sum(0, dtype=torch.float32).mul_(scale).to(b_dtype)
        return grad_h, grad_w, grad_b, None


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
        dtype = _compute_dtype(hidden, weight)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            for start in range(0, hidden.shape[0], chunk_size):
                h = hidden[start : start + chunk_size].to(dtype)  # (C, D)
                g = F.linear(h, w, b)  # (C, V) logits, made d CE / d logits in place
                total += _softmax_grad_(g, targets[start : start + chunk_size], h, w, b)
                if grad_h is not None:
                    grad_h[start : start + chunk_size] = g @ w  # (C, D)
                if grad_w is not None:
                    grad_w += g.T @ h  # (V, D), accumulated in float32
                if grad_b is not None:
                    grad_b += g.sum(0, dtype=torch.float32)
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
        if torch.is_grad_enabled() and _is_plain_linear(head):
            assert isinstance(head, nn.Linear)
            out = _FusedLinearCrossEntropy.apply(hidden, head.weight, head.bias, targets)
            return out  # type: ignore[no-any-return]
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
