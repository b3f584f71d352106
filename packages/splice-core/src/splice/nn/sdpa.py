"""``scaled_dot_product_attention`` with a faster training kernel for short keys on CPU.

PyTorch's CPU flash-attention kernel never holds a ``(T, S)`` score matrix, which keeps
memory linear in the sequence length; but in bfloat16 its backward runs at about a tenth
of the machine's matmul peak (d=64, T=S=256: ~27 ms of a 41 ms forward+backward per layer
at batch 8 x 8 heads). When the key length is short, a head's whole score matrix is small
(``256 x 256`` bf16 = 128 KiB), and the textbook algorithm -- batched GEMMs for ``Q K^T``
and ``P V``, one softmax, saved probabilities, four GEMMs and one softmax-backward in
backward -- is 2-3x faster forward+backward (``benchmarks/bench_attention.py``).

:func:`scaled_dot_product_attention` takes that path only where it wins and keeps exact
SDPA semantics: on CPU, in bfloat16, with gradients being recorded, no dropout, and at
most :data:`MAX_EXPLICIT_KEYS` keys (at 512 keys the two tie, at 1024 flash is faster and
the saved probabilities, ``B H T S`` elements, start to cost real memory). Everything else
-- inference, float32, long sequences, dropout, CUDA -- calls
``torch.nn.functional.scaled_dot_product_attention`` unchanged.

Precision: the scores are rounded to bfloat16 once (the GEMM accumulates in float32; the
flash kernel keeps them in float32), the softmax is taken in float32 from them, and the
probabilities and their gradient are bfloat16 operands of the next GEMMs, as in flash
attention on GPUs. Against a float64 reference the output and gradients come out within
~2x of the flash kernel's own bf16 error (``tests/test_nn_sdpa.py`` asserts it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

#: Longest key length that takes the explicit path (see the module docstring).
MAX_EXPLICIT_KEYS = 256

_EXPLICIT_DTYPES = (torch.bfloat16,)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    enable_gqa: bool = False,
) -> Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` with the semantics of torch's SDPA.

    Args:
        q: ``(B, H, T, d)`` queries.
        k, v: ``(B, H_kv, S, d)`` keys and values; ``H_kv`` divides ``H`` when
            ``enable_gqa`` (query head ``i`` reads key/value head ``i // (H / H_kv)``).
        attn_mask: bool, broadcastable to ``(B, H, T, S)``, True = may attend. A query
            row that may attend to nothing gets a zero output (and zero gradients).
        is_causal: query ``i`` sees keys ``<= i`` (top-left aligned, as in SDPA);
            not together with ``attn_mask``.
        dropout_p: dropout on the attention probabilities.

    Returns:
        ``(B, H, T, d)``.
    """
    if _takes_explicit_path(q, k, v, attn_mask, dropout_p):
        if is_causal and attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both")
        if k.shape[1] != q.shape[1] and not enable_gqa:
            raise ValueError(f"q has {q.shape[1]} heads and k/v {k.shape[1]}: pass enable_gqa=True")
        return _ExplicitAttention.apply(q, k, v, attn_mask, is_causal)  # type: ignore[no-any-return]
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=attn_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        enable_gqa=enable_gqa,
    )


def _takes_explicit_path(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float
) -> bool:
    return (
        q.device.type == "cpu"
        and q.dtype in _EXPLICIT_DTYPES
        and k.dtype == q.dtype
        and v.dtype == q.dtype
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
        and dropout_p == 0.0
        and k.shape[-2] <= MAX_EXPLICIT_KEYS
        and (mask is None or mask.dtype == torch.bool)
    )


def _score_bias(
    mask: Tensor | None, is_causal: bool, t: int, s: int, like: Tensor
) -> Tensor | None:
    """The additive ``0 / -inf`` bias of a bool mask or of causality, or None for neither."""
    if mask is not None:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill_(
            ~mask, float("-inf")
        )
    if is_causal:
        upper = torch.ones(t, s, dtype=torch.bool, device=like.device).triu_(1)
        return torch.zeros(t, s, dtype=like.dtype, device=like.device).masked_fill_(
            upper, float("-inf")
        )
    return None


class _ExplicitAttention(torch.autograd.Function):
    """Attention through batched GEMMs with the ``(B H, T, S)`` probabilities saved."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
    ) -> Tensor:
        b, h, t, d = q.shape
        h_kv, s = k.shape[1], k.shape[2]
        if h_kv != h:  # GQA: each key/value head serves h / h_kv consecutive query heads
            k = k.repeat_interleave(h // h_kv, dim=1)
            v = v.repeat_interleave(h // h_kv, dim=1)
        scale = 1.0 / math.sqrt(d)
        q3, k3, v3 = q.reshape(b * h, t, d), k.reshape(b * h, s, d), v.reshape(b * h, s, d)
        bias = _score_bias(mask, is_causal, t, s, q)
        if bias is not None and bias.dim() == 2:  # one (T, S) bias for every head: in the GEMM
            scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=scale)  # (BH, T, S)
        else:
            scores = torch.baddbmm(q3.new_empty(()), q3, k3.transpose(1, 2), beta=0.0, alpha=scale)
            if bias is not None:
                scores.view(b, h, t, s).add_(bias)
        probs = torch.softmax(scores, dim=-1, out=scores)  # in place: a row is read first
        if mask is not None:
            dead = ~mask.any(dim=-1, keepdim=True)  # rows that see no key: NaN -> 0, as SDPA
            if bool(dead.any()):
                probs.view(b, h, t, s).masked_fill_(dead, 0.0)
        out = torch.bmm(probs, v3)  # (BH, T, d)
        ctx.save_for_backward(q3, k3, v3, probs)
        ctx.shape = (b, h, h_kv, t, s, d)  # type: ignore[attr-defined]
        return out.view(b, h, t, d)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        q3, k3, v3, probs = ctx.saved_tensors  # type: ignore[attr-defined]
        b, h, h_kv, t, s, d = ctx.shape  # type: ignore[attr-defined]
        scale = 1.0 / math.sqrt(d)
        do3 = grad_out.reshape(b * h, t, d)
        grad_v = torch.bmm(probs.transpose(1, 2), do3)  # (BH, S, d)
        grad_p = torch.bmm(do3, v3.transpose(1, 2))  # (BH, T, S)
        # softmax backward: P * (dP - rowsum(P * dP)), in one kernel
        grad_s = torch._softmax_backward_data(grad_p, probs, -1, probs.dtype)
        grad_q = torch.bmm(grad_s, k3).mul_(scale).view(b, h, t, d)
        grad_k = torch.bmm(grad_s.transpose(1, 2), q3).mul_(scale).view(b, h, s, d)
        grad_v = grad_v.view(b, h, s, d)
        if h_kv != h:  # sum the gradients of the query heads that shared a key/value head
            grad_k = grad_k.view(b, h_kv, h // h_kv, s, d).sum(2)
            grad_v = grad_v.view(b, h_kv, h // h_kv, s, d).sum(2)
        return grad_q, grad_k, grad_v, None, None
