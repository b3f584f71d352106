"""Multi-head attention as the seed describes it, on ``scaled_dot_product_attention``
(``splice.nn.sdpa``: torch's SDPA, or a faster kernel for short keys in CPU bf16 training).

``Q = x W_Q``, ``K = x W_K``, ``V = x W_V`` split into heads;
``softmax(Q K^T / sqrt(d_k)) V`` per head; heads concatenated; output projection.
Grouped-query attention shares each K/V head across ``n_heads / n_kv_heads``
query heads. Cross-attention takes K and V from ``inputs.context``.
"""

from __future__ import annotations

import torch
from splice.generation.kv_cache import CrossKVCache
from splice.interfaces import AttentionInputs, BuildContext, TokenMixer
from splice.nn.fused import FusedLinears
from splice.nn.masks import causal_mask
from splice.nn.norms import RMSNorm
from splice.nn.sdpa import scaled_dot_product_attention
from torch import Tensor, nn

from splice_mha.configs import CrossAttentionConfig, MHAConfig


class MultiHeadAttention(TokenMixer):
    """Self-attention ``(B, T, D) -> (B, T, D)`` with causal/padding masks, GQA, QK-norm, RoPE, KV cache.

    Args:
        d_model: width ``D`` of the input and output.
        n_heads: number of query heads ``H``.
        n_kv_heads: number of key/value heads ``H_kv`` (divides ``H``).
        head_dim: size ``d`` of each head.
        bias: bias on the output projection.
        qkv_bias: bias on the Q, K, V projections.
        qk_norm: RMS-normalise queries and keys per head before RoPE (OLMo-2 / Qwen3 style).
        dropout: attention-probability dropout while training.
        rotary: the model's RoPE module, or None for additive / no positions.
        d_context: width of the K/V source when it is not ``x`` (cross-attention).
    """

    def __init__(
        self,
        d_model: int,
        *,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        bias: bool = False,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        dropout: float = 0.0,
        rotary: nn.Module | None = None,
        d_context: int | None = None,
    ) -> None:
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        d_kv_in = d_context or d_model
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_kv_in, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_kv_in, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.q_norm = RMSNorm(head_dim) if qk_norm else None
        self.k_norm = RMSNorm(head_dim) if qk_norm else None
        self.dropout = dropout
        self.rotary = rotary
        # One matmul for Q, K and V when gradients are off (decoding); see splice.nn.fused.
        self._qkv = FusedLinears("q_proj", "k_proj", "v_proj")
        self._out = FusedLinears("o_proj")

    def split_heads(self, x: Tensor, n: int) -> Tensor:
        """``(B, T, n * head_dim) -> (B, n, T, head_dim)``: a projection's output as ``n``
        heads (public: callers that run the projections themselves, e.g. splice-vision)."""
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)  # (B, n, T, d)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        """``softmax(q k^T / sqrt(d)) v``: q ``(B, H, T, d)``, k/v ``(B, H_kv, S, d)`` -> ``(B, T, H*d)``.

        ``mask (B, 1, T, S)`` bool (True = may attend) wins over ``is_causal``. Causal with
        ``T < S`` (new tokens after a cache) aligns query ``i`` with key ``S - T + i``;
        SDPA's own ``is_causal`` would align it with key ``i``, so that case gets a mask.
        """
        mask, is_causal = aligned_mask(q.shape[2], k.shape[2], mask, is_causal, q.device)
        y = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, H, T, d)
        b, _, t, _ = y.shape
        if t == 1:  # (B, H, 1, d) already has the memory order of (B, 1, H*d): one view
            return y.reshape(b, 1, self.n_heads * self.head_dim)
        return y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        qkv = self._qkv.fused(self, x) if self.q_norm is None else None
        heads: tuple[Tensor, Tensor, Tensor] | None = None
        if qkv is None and self.q_norm is None and self.rotary is None and _many_rows(x):
            # Encoders and learned-position models in training or batched inference: one
            # GEMM for Q, K and V (and one for their input gradient, no sum of three).
            qkv = self._qkv.joint(self, x)
            if qkv is not None and self.n_kv_heads == self.n_heads:
                heads, qkv = self._unbound_heads(qkv), None
        if heads is not None:
            q, k, v = heads
        elif qkv is not None:
            q, k, v = self._joint_heads(qkv, inputs)
        else:
            q, k, v = self._qkv(self, x)
            q = self.split_heads(q, self.n_heads)  # (B, H, T, d)
            k = self.split_heads(k, self.n_kv_heads)  # (B, H_kv, T, d)
            v = self.split_heads(v, self.n_kv_heads)
            if self.q_norm is not None and self.k_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.rotary is not None:
                q, k = self.rotary.rotate(q, k, inputs.positions, inputs.rope)  # type: ignore[operator]
        if inputs.cache is not None:
            k, v = inputs.cache.update(k, v)  # (B, H_kv, S, d)
        return self._out.one(self, self.attend(q, k, v, inputs.attn_mask, inputs.is_causal))

    def _unbound_heads(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, T, 3 H d)`` -> q, k, v ``(B, H, T, d)`` as views of ``(B, T, 3, H, d)``.

        Unbind's backward stacks the three gradients into the projection's layout in one
        copy; splitting along the heads would concatenate them and then copy them again.
        """
        b, t, _ = qkv.shape
        q, k, v = qkv.view(b, t, 3, self.n_heads, self.head_dim).unbind(2)  # (B, T, H, d)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _joint_heads(self, qkv: Tensor, inputs: AttentionInputs) -> tuple[Tensor, Tensor, Tensor]:
        """Split one fused ``(B, T, (H + 2 H_kv) d)`` projection into rotated q, k and v.

        The query and key heads sit side by side, so RoPE rotates them in one call: at
        decode this path runs half the ops of projecting, splitting and rotating each.
        """
        b, t, _ = qkv.shape
        h, h_kv = self.n_heads, self.n_kv_heads
        if t == 1:  # decode: (B, 1, n*d) already has the memory order of (B, n, 1, d)
            heads = qkv.view(b, h + 2 * h_kv, 1, self.head_dim)
        else:
            heads = qkv.view(b, t, h + 2 * h_kv, self.head_dim).transpose(1, 2)  # (B, n, T, d)
        qk, v = heads.split_with_sizes([h + h_kv, h_kv], dim=1)
        if self.rotary is not None:
            qk = self.rotary.rotate_heads(qk, inputs.positions, inputs.rope)  # type: ignore[operator]
        q, k = qk.split_with_sizes([h, h_kv], dim=1)
        return q, k, v


class CrossAttention(MultiHeadAttention):
    """Queries from ``x (B, T, D)``, keys/values from ``inputs.context (B, S, D_ctx)``; no causal mask.

    With ``gated=True`` the output is scaled by ``tanh(gate)``, ``gate`` starting at 0, so a
    pretrained decoder is unchanged until training opens the gate (Flamingo).
    """

    def __init__(self, d_model: int, *, gated: bool = False, **kwargs: object) -> None:
        super().__init__(d_model, **kwargs)  # type: ignore[arg-type]
        self.gate = nn.Parameter(torch.zeros(1)) if gated else None

    def context_kv(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Keys and values of the context ``(B, S, D_ctx)``: each ``(B, H_kv, S, d)``."""
        if context is None:
            raise ValueError("cross-attention needs inputs.context (B, S, D_ctx); none was given")
        k = self.split_heads(self.k_proj(context), self.n_kv_heads)  # (B, H_kv, S, d)
        v = self.split_heads(self.v_proj(context), self.n_kv_heads)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return k, v

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        if inputs.context is None and not _cached(inputs.cache):
            raise ValueError("cross-attention needs inputs.context (B, S, D_ctx); none was given")
        q = self.split_heads(self.q_proj(x), self.n_heads)  # (B, H, T, d)
        if self.q_norm is not None:
            q = self.q_norm(q)
        cache = inputs.cache
        if isinstance(cache, CrossKVCache):  # generation: the context's K/V once per prompt
            k, v = cache.get(lambda: self.context_kv(inputs.context))
        else:
            k, v = self.context_kv(inputs.context)
        y = self.o_proj(self.attend(q, k, v, inputs.context_mask, False))
        return y * torch.tanh(self.gate) if self.gate is not None else y


def aligned_mask(
    t: int, s: int, mask: Tensor | None, is_causal: bool, device: torch.device
) -> tuple[Tensor | None, bool]:
    """``(mask, is_causal)`` for SDPA with ``t`` queries after ``s - t`` cached keys.

    Causal with ``t < s`` aligns query ``i`` with key ``s - t + i``; SDPA's own ``is_causal``
    would align it with key ``i``, so that case gets an explicit ``(t, s)`` mask.
    """
    if mask is None and is_causal and t != s:
        if t == 1:
            return None, False  # the newest token sees every key
        return causal_mask(t, s, device=device), False
    return mask, is_causal


#: Fewest ``x`` rows (tokens in the batch) for which concatenating the Q/K/V weights per
#: call costs less than it saves; below it (decoding) the projections run one by one.
MIN_JOINT_ROWS = 64


def _many_rows(x: Tensor) -> bool:
    return x.numel() >= MIN_JOINT_ROWS * x.shape[-1]


def _cached(cache: object) -> bool:
    return isinstance(cache, CrossKVCache) and cache.k is not None


def _kwargs(config: MHAConfig, ctx: BuildContext) -> dict[str, object]:
    return dict(
        n_heads=config.n_heads,
        n_kv_heads=config.kv_heads,
        head_dim=config.head_dim_for(ctx.d_model),
        bias=config.bias,
        qkv_bias=config.bias if config.qkv_bias is None else config.qkv_bias,
        qk_norm=config.qk_norm,
        dropout=config.dropout,
    )


def build_mha(config: MHAConfig, ctx: BuildContext) -> TokenMixer:
    return MultiHeadAttention(ctx.d_model, rotary=ctx.rotary, **_kwargs(config, ctx))  # type: ignore[arg-type]


def build_cross_attention(config: CrossAttentionConfig, ctx: BuildContext) -> TokenMixer:
    return CrossAttention(
        ctx.d_model, gated=config.gated, d_context=ctx.d_context, **_kwargs(config, ctx)
    )
