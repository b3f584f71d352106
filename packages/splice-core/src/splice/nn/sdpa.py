"""``scaled_dot_product_attention`` with a faster CPU training kernel for short keys.

PyTorch's CPU flash-attention kernel never holds a ``(T, S)`` score matrix, which keeps
memory linear in the sequence length; but its backward runs far below the machine's
matmul peak, in bfloat16 at about a tenth of it (d=64, T=S=256, batch 8 x 8 heads: ~27 ms
of a ~40 ms forward+backward per layer on 2 cores). When the key length is short, a head's
score matrix is small (``256 x 256`` bf16 = 128 KiB), and the textbook algorithm -- batched
GEMMs for ``Q K^T`` and ``P V``, one softmax, the probabilities saved, four GEMMs and one
softmax-backward in backward -- is faster. Causal rows are taken in blocks of 128 so the
tiles above the diagonal are never computed. Forward+backward time against flash, causal,
d=64, batch 8 x 8 heads, kernel alone (2-core runs; ``docs/benchmarks.md`` has the module
with its projections and the effect on a training step):

=========  =====  ==========  ==========  ==========  ==========
T = S      64     128         256         512         1024
=========  =====  ==========  ==========  ==========  ==========
bfloat16   0.14x  0.31x       0.40x       0.49-0.64x  0.65x
float32    0.78x  0.86-0.95x  0.87-1.02x  0.83x       0.95x
=========  =====  ==========  ==========  ==========  ==========

(the 64-key column at batch 16-32 x 4 heads, d=32). At 2048 keys the two tie, and the saved
probabilities (``B H T S`` elements) cost real memory; in float32 the gain past 64 keys is
within run-to-run noise, and in the attention benchmark (batch 4, T=256, projections
included) float32 came out 3-7% slower. So :func:`scaled_dot_product_attention` takes the
explicit path only on CPU, with gradients being recorded, without dropout, for at most
:data:`MAX_EXPLICIT_KEYS` keys (1024 in bfloat16, 64 in float32; in float32 only causal or
masked attention, see :data:`EXPLICIT_BIDIRECTIONAL`) and
:data:`MAX_EXPLICIT_BYTES` of probabilities. Everything else -- inference and decoding,
float64, long sequences, dropout, CUDA -- calls
``torch.nn.functional.scaled_dot_product_attention`` unchanged.

Precision: in float32 the two kernels agree to float rounding. In bfloat16 the scores are
rounded to bfloat16 once (the GEMM accumulates in float32; the flash kernel keeps them in
float32), the softmax is taken in float32 from them, and the probabilities and their
gradient are bfloat16 operands of the next GEMMs, as in flash attention on GPUs. Against a
float64 reference the output and gradients come out within ~1.6x of the flash kernel's
own bf16 error (``tests/test_nn_sdpa.py`` asserts <= 2.5x).

Decoding in bfloat16 (no gradients, a few queries against the KV cache) takes a second
explicit path, :func:`decode_attention`: torch's CPU flash kernel spends ~1-3.5 ms per call
on a decode step's 8 x 8 heads x 1 query x 20-144 keys (d=64, 1 thread) where two batched
GEMMs and a softmax take ~0.05-0.3 ms; in float32 the two are level (the flash kernel's
float32 path is ~30x faster than its bf16 one there), so float32 keeps torch's kernel.
"""

from __future__ import annotations

import itertools
import math
import weakref

import torch
from torch import Tensor
from torch.nn import functional as F

#: Longest key length that takes the explicit path, per dtype (see the module docstring).
MAX_EXPLICIT_KEYS = {torch.bfloat16: 1024, torch.float32: 64}
#: Whether attention with neither a mask nor causality takes the explicit path, per dtype.
#: Not in float32: at ViT sizes (17 keys, d=64, batch 32 x 4 heads, the projections
#: included) torch's kernel ran the attention module's forward+backward 1.18-1.27x faster
#: on 2 cores; the float32 gain above was measured on causal attention.
EXPLICIT_BIDIRECTIONAL = {torch.bfloat16: True, torch.float32: False}
#: Largest ``(B, H, T, S)`` probability tensor it saves for backward; beyond it, flash
#: attention's linear memory is worth more than the speed.
MAX_EXPLICIT_BYTES = 128 << 20
#: Dtypes whose inference attention with at most ``MAX_DECODE_QUERIES`` queries takes
#: :func:`decode_attention` on CPU (see the module docstring).
DECODE_DTYPES = (torch.bfloat16,)
MAX_DECODE_QUERIES = 16


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
    if _takes_explicit_path(q, k, v, attn_mask, dropout_p, is_causal):
        if is_causal and attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both")
        if k.shape[1] != q.shape[1] and not enable_gqa:
            raise ValueError(f"q has {q.shape[1]} heads and k/v {k.shape[1]}: pass enable_gqa=True")
        return _ExplicitAttention.apply(q, k, v, attn_mask, is_causal)  # type: ignore[no-any-return]
    if _takes_decode_path(q, k, v, attn_mask, dropout_p, is_causal):
        if k.shape[1] != q.shape[1] and not enable_gqa:
            raise ValueError(f"q has {q.shape[1]} heads and k/v {k.shape[1]}: pass enable_gqa=True")
        return decode_attention(q, k, v, attn_mask)
    if attn_mask is not None and attn_mask.dtype == torch.bool and torch.is_grad_enabled():
        attn_mask = additive_mask(attn_mask, q.dtype)  # saved once for backward, not per layer
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=attn_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        enable_gqa=enable_gqa,
    )


#: ``(id(bool mask), dtype) -> (the mask's version, additive mask)``; an entry leaves when
#: its bool mask is freed (``weakref.finalize``).
_ADDITIVE_MASKS: dict[tuple[int, torch.dtype], tuple[int, Tensor]] = {}


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The bool ``mask`` (True = may attend) as the additive mask torch's SDPA makes of it
    (0 where True, -inf elsewhere, in ``dtype``), made once per mask and reused.

    Why: torch converts a bool mask to this float mask inside every call, and its CPU flash
    kernel saves the converted copy for backward, so a model whose layers share one
    ``(B, 1, T, S)`` mask kept one float copy per layer: 4 bytes per element per layer
    against 1 for the bool mask (one DPO step at 2048-token sequences, 4 layers: the masks
    were most of its peak memory, docs/benchmarks.md). Handing every layer the same float
    tensor, autograd saves it once.

    Returned unchanged (bool) when some query row may attend to nothing (torch gives such a
    row a zero output from a bool mask, NaN from an all -inf row), for an inference-mode
    tensor, and while compiling (the cache is Python state; the compiled graph converts the
    mask itself). ``scaled_dot_product_attention`` calls it only while gradients are
    recorded: without them nothing is saved and torch's own conversion is freed per call.
    """
    if torch.compiler.is_compiling() or mask.is_inference():  # no version counter to key on
        return mask
    key = (id(mask), dtype)
    hit = _ADDITIVE_MASKS.get(key)
    if hit is not None and hit[0] == mask._version:
        return hit[1]
    if not bool(mask.any(dim=-1).all()):
        return mask
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    out.masked_fill_(mask.logical_not(), float("-inf"))
    if hit is None:  # first sight of this mask: forget it when the mask is freed
        weakref.finalize(mask, _ADDITIVE_MASKS.pop, key, None)
    _ADDITIVE_MASKS[key] = (mask._version, out)
    return out


def _takes_explicit_path(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, is_causal: bool
) -> bool:
    return (
        q.device.type == "cpu"
        and q.dtype in MAX_EXPLICIT_KEYS
        and (is_causal or mask is not None or EXPLICIT_BIDIRECTIONAL[q.dtype])
        and k.dtype == q.dtype
        and v.dtype == q.dtype
        and v.shape[-1] == q.shape[-1]  # one head size (MLA's values are narrower: torch's)
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
        and dropout_p == 0.0
        and k.shape[-2] <= MAX_EXPLICIT_KEYS[q.dtype]
        and q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.element_size()
        <= MAX_EXPLICIT_BYTES
        and (mask is None or mask.dtype == torch.bool)
    )


def _takes_decode_path(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, is_causal: bool
) -> bool:
    return (
        q.device.type == "cpu"
        and q.dtype in DECODE_DTYPES
        and k.dtype == q.dtype
        and v.dtype == q.dtype
        and q.shape[2] <= MAX_DECODE_QUERIES
        and not is_causal  # a cache's causal alignment arrives as a mask (splice-mha)
        and dropout_p == 0.0
        and not (
            torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        )
        and q.shape[1] % k.shape[1] == 0
        and (mask is None or mask.dtype == torch.bool)
    )


def decode_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Inference attention for a few queries: ``softmax(q k^T / sqrt(d) + mask) v``.

    Query heads that share a key/value head are stacked as rows of one GEMM, so GQA needs
    no copy of the keys: q ``(B, H, T, d)`` is read as ``(B H_kv, (H / H_kv) T, d)`` against
    k ``(B H_kv, S, d)``, which is a view of a KV cache's ``(B, H_kv, max_len, d)`` buffer
    cut to ``S`` positions. The scores are rounded to q's dtype once (the GEMM accumulates
    in float32), the softmax computes in float32 internally, and the probabilities are the
    bf16 operand of the second GEMM, as in ``_ExplicitAttention``. A query row that may
    attend to nothing gets zeros, as in SDPA.

    Args:
        q: ``(B, H, T, d)`` queries.
        k: ``(B, H_kv, S, d)`` keys, ``H_kv`` dividing ``H``.
        v: ``(B, H_kv, S, d_v)`` values.
        mask: bool, broadcastable to ``(B, H, T, S)``, True = may attend. A query row
            that may attend to nothing gets a zero output, as in SDPA.

    Returns:
        ``(B, H, T, d_v)``, contiguous.
    """
    b, h, t, d = q.shape
    h_kv, s, d_v = k.shape[1], k.shape[2], v.shape[-1]
    rows = h // h_kv * t  # query rows per key/value head
    qg = q.reshape(b * h_kv, rows, d)  # (B H_kv, g T, d)
    # A cache buffer cut along S is strided between heads; bf16 bmm copies such operands
    # itself (the keys transposed, ~1.6x the time of the whole kernel measured with a
    # plain block copy first), so the blocks are copied here, untransposed.
    kg = k.reshape(b * h_kv, s, d).contiguous()  # (B H_kv, S, d)
    vg = v.reshape(b * h_kv, s, d_v).contiguous()
    scores = torch.baddbmm(qg.new_empty(()), qg, kg.transpose(1, 2), beta=0.0, alpha=d**-0.5)
    dead = None
    if mask is not None:
        allowed = mask.expand(b, h, t, s).reshape(b * h_kv, rows, s)
        scores.masked_fill_(~allowed, float("-inf"))
        dead = ~allowed.any(-1, keepdim=True)  # (B H_kv, g T, 1)
        if not (torch.compiler.is_compiling() or bool(dead.any())):
            dead = None
    p = torch.softmax(scores, dim=-1)  # (B H_kv, g T, S)
    if dead is not None:
        p.masked_fill_(dead, 0.0)
    return torch.bmm(p, vg).view(b, h, t, d_v)


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
    """Attention through batched GEMMs with the probabilities saved.

    Causal attention with ``T == S`` is computed in row blocks: block ``i`` of queries only
    sees the keys up to its last row, so the tiles above the diagonal are never computed
    (two blocks do 3/4 of the full ``T x S`` work, four 5/8).

    Layout: q/k/v usually arrive as head views ``(B, H, T, d)`` of token-major
    ``(B, T, H, d)`` projections. Each block's operands are gathered once into contiguous
    ``(B H, rows, d)`` matrices (the GEMMs would copy strided ones anyway), the output is
    written in q's layout (token-major: merging the heads back is a view), and each input
    gradient in its input's layout, so the projections' backward needs no copy either.
    ``1/sqrt(d)`` is every GEMM's ``alpha``, never a separate pass.
    """

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
        ctx.token_major = [_token_major(x) for x in (q, k, v)]  # type: ignore[attr-defined]
        if h_kv != h:  # GQA: each key/value head serves h / h_kv consecutive query heads
            k = k.repeat_interleave(h // h_kv, dim=1)
            v = v.repeat_interleave(h // h_kv, dim=1)
        scale = 1.0 / math.sqrt(d)
        blocks = _row_blocks(t, s, is_causal and mask is None)
        bias = _score_bias(mask, is_causal, t, s, q)
        out = _empty_layout(ctx.token_major[0], (b, h, t, d), q)  # type: ignore[attr-defined]
        dead = None  # query rows that see no key: their NaN probabilities become 0, as in SDPA
        if mask is not None:
            dead = ~mask.any(dim=-1, keepdim=True)
            # (a compiled graph cannot branch on data: it always fills)
            if not (torch.compiler.is_compiling() or bool(dead.any())):
                dead = None
        saved: list[Tensor] = []
        for r0, r1, keys in blocks:
            q_b = q[:, :, r0:r1].reshape(b * h, r1 - r0, d)  # contiguous (BH, rows, d)
            k_b = k[:, :, :keys].reshape(b * h, keys, d)  # (BH, keys, d)
            v_b = v[:, :, :keys].reshape(b * h, keys, d)
            if bias is not None and bias.dim() == 2:  # one (T, S) bias for all heads: in the GEMM
                scores = torch.baddbmm(bias[r0:r1, :keys], q_b, k_b.transpose(1, 2), alpha=scale)
            else:
                scores = torch.baddbmm(
                    q_b.new_empty(()), q_b, k_b.transpose(1, 2), beta=0.0, alpha=scale
                )  # (BH, rows, keys)
                if bias is not None:  # a per-batch mask: blocks are only made without one
                    scores.view(b, h, t, s).add_(bias)
            p = torch.softmax(scores, dim=-1)
            if dead is not None:  # a mask means one block: p is (BH, T, S)
                p.view(b, h, t, s).masked_fill_(dead, 0.0)
            out[:, :, r0:r1] = torch.bmm(p, v_b).view(b, h, r1 - r0, d)
            saved += [q_b, k_b, v_b, p]
        ctx.save_for_backward(*saved)
        ctx.shape = (b, h, h_kv, t, s, d)  # type: ignore[attr-defined]
        ctx.blocks = blocks  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors  # type: ignore[attr-defined]
        b, h, h_kv, t, s, d = ctx.shape  # type: ignore[attr-defined]
        q_major, k_major, v_major = ctx.token_major  # type: ignore[attr-defined]
        scale = 1.0 / math.sqrt(d)
        none = grad_out.new_empty(())  # baddbmm's ignored input (beta=0)
        grad_q = _empty_layout(q_major, (b, h, t, d), grad_out)
        grad_k = grad_v = None
        # The last block sees every key: its products initialise dK and dV, earlier
        # (shorter) blocks add into their leading rows.
        for i in reversed(range(len(ctx.blocks))):  # type: ignore[attr-defined]
            r0, r1, keys = ctx.blocks[i]  # type: ignore[attr-defined]
            q_b, k_b, v_b, p = saved[4 * i : 4 * i + 4]
            do_b = grad_out[:, :, r0:r1].reshape(b * h, r1 - r0, d)
            dv_b = torch.bmm(p.transpose(1, 2), do_b)  # (BH, keys, d)
            grad_p = torch.bmm(do_b, v_b.transpose(1, 2))  # (BH, rows, keys)
            # softmax backward: P * (dP - rowsum(P * dP)), in one kernel
            grad_s = torch._softmax_backward_data(grad_p, p, -1, p.dtype)
            # 1/sqrt(d) as the GEMMs' alpha; no out= (torch.compile cannot trace it here)
            dq_b = torch.baddbmm(none, grad_s, k_b, beta=0.0, alpha=scale)  # (BH, rows, d)
            grad_q[:, :, r0:r1] = dq_b.view(b, h, r1 - r0, d)
            dk_b = torch.baddbmm(none, grad_s.transpose(1, 2), q_b, beta=0.0, alpha=scale)
            if grad_k is None or grad_v is None:
                grad_k, grad_v = dk_b, dv_b
            else:
                grad_k[:, :keys] += dk_b
                grad_v[:, :keys] += dv_b
        assert grad_k is not None and grad_v is not None
        dk = grad_k.view(b, h, s, d)
        dv = grad_v.view(b, h, s, d)
        if h_kv != h:  # sum the gradients of the query heads that shared a key/value head
            dk = dk.view(b, h_kv, h // h_kv, s, d).sum(2)
            dv = dv.view(b, h_kv, h // h_kv, s, d).sum(2)
        shape_kv = (b, h_kv, s, d)
        out_k = _empty_layout(k_major, shape_kv, grad_out).copy_(dk) if k_major else dk
        out_v = _empty_layout(v_major, shape_kv, grad_out).copy_(dv) if v_major else dv
        return grad_q, out_k, out_v, None, None


def _token_major(x: Tensor) -> bool:
    """Is ``x (B, n, T, d)`` a head view of a contiguous ``(B, T, n, d)`` tensor?"""
    return x.shape[1] > 1 and x.transpose(1, 2).is_contiguous()


def _empty_layout(token_major: bool, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An empty ``(B, n, T, d)`` tensor, token-major in memory when asked."""
    if token_major:
        b, n, t, d = shape
        return like.new_empty(b, t, n, d).transpose(1, 2)
    return like.new_empty(shape)


#: Causal attention is split into row blocks from this many queries on (smaller tiles run
#: the GEMMs less efficiently than the skipped work saves).
_MIN_BLOCKED_ROWS = 128


def _row_blocks(t: int, s: int, causal: bool) -> list[tuple[int, int, int]]:
    """``(first row, end row, keys seen)`` per block of query rows."""
    if not causal or t != s or t < 2 * _MIN_BLOCKED_ROWS:
        return [(0, t, s)]
    n = t // _MIN_BLOCKED_ROWS
    bounds = [t * i // n for i in range(n + 1)]
    return [(r0, r1, r1) for r0, r1 in itertools.pairwise(bounds)]
