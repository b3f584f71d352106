"""Multi-head latent attention (MLA, DeepSeek-V2/V3).

Per token, one down-projection gives a latent ``c_kv (r)`` and a rotary key ``k_rope (d_r)``
shared by all heads; ``kv_b_proj`` expands the RMS-normalised latent into every head's
position-free key part ``k_nope (d_n)`` and value ``v (d_v)``::

    c_kv, k_rope = split(kv_a_proj(x))                     # (B, T, r), (B, T, d_r)
    k_h = [kv_b_proj(norm(c_kv))_h^nope ; rope(k_rope)]    # (B, H, S, d_n + d_r)
    q_h = [q_h^nope ; rope(q_h^rope)]                      # from q_proj or q_b(norm(q_a(x)))
    y = o_proj(concat_h softmax(q_h k_h^T / sqrt(d_n + d_r)) v_h)

The KV cache holds ``norm(c_kv)`` and the rotated ``k_rope`` (``r + d_r`` numbers per token),
so the cache is independent of the number of heads; keys and values are rebuilt from it
for each step. RoPE uses the rotate-half layout; DeepSeek's checkpoints rotate interleaved
pairs, which their importer turns into this layout by permuting projection rows.
"""

from __future__ import annotations

from splice.interfaces import AttentionInputs, BuildContext, TokenMixer
from splice.nn.norms import RMSNorm
from splice.nn.sdpa import scaled_dot_product_attention
from torch import Tensor, nn

from splice_mha.attention import aligned_mask
from splice_mha.configs import MLAConfig


class MultiHeadLatentAttention(TokenMixer):
    """Self-attention ``(B, T, D) -> (B, T, D)`` whose K/V come from a cached latent.

    Args:
        d_model: width ``D``.
        n_heads: heads ``H``.
        kv_lora_rank: latent width ``r``.
        q_lora_rank: query bottleneck width, or None for a direct ``q_proj``.
        qk_nope_head_dim / qk_rope_head_dim / v_head_dim: ``d_n``, ``d_r``, ``d_v``.
        bias: bias on ``q_a_proj``, ``kv_a_proj`` and ``o_proj``.
        norm_eps: eps of the latent RMSNorms.
        dropout: attention-probability dropout while training.
        rotary: the model's RoPE of width ``d_r``, or None (no rotation).
    """

    def __init__(
        self,
        d_model: int,
        *,
        n_heads: int,
        kv_lora_rank: int,
        q_lora_rank: int | None,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        bias: bool = False,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        rotary: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.n_heads, self.rank = n_heads, kv_lora_rank
        self.d_nope, self.d_rope, self.d_v = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        d_qk = qk_nope_head_dim + qk_rope_head_dim
        self.q_proj: nn.Linear | None = None
        self.q_a_proj: nn.Linear | None = None
        self.q_a_norm: RMSNorm | None = None
        self.q_b_proj: nn.Linear | None = None
        if q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, n_heads * d_qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(d_model, q_lora_rank, bias=bias)
            self.q_a_norm = RMSNorm(q_lora_rank, eps=norm_eps)
            self.q_b_proj = nn.Linear(q_lora_rank, n_heads * d_qk, bias=False)
        self.kv_a_proj = nn.Linear(d_model, kv_lora_rank + qk_rope_head_dim, bias=bias)
        self.kv_a_norm = RMSNorm(kv_lora_rank, eps=norm_eps)
        self.kv_b_proj = nn.Linear(
            kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False
        )
        self.o_proj = nn.Linear(n_heads * v_head_dim, d_model, bias=bias)
        self.dropout = dropout
        self.rotary = rotary
        if rotary is not None and getattr(rotary, "head_dim", qk_rope_head_dim) != qk_rope_head_dim:
            raise ValueError(
                f"the model's RoPE rotates {rotary.head_dim} dims (head_dim), "  # type: ignore[union-attr]
                f"MLA needs qk_rope_head_dim={qk_rope_head_dim}"
            )

    def _queries(self, x: Tensor) -> Tensor:
        """``x (B, T, D)`` -> ``(B, H, T, d_n + d_r)``, before RoPE."""
        if self.q_proj is not None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))  # type: ignore[misc]
        b, t, _ = x.shape
        return q.view(b, t, self.n_heads, -1).transpose(1, 2)  # (B, H, T, d_n + d_r)

    def latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """What the cache stores for ``x (B, T, D)``: ``norm(c_kv) (B, 1, T, r)``, ``k_rope (B, 1, T, d_r)``
        (not yet rotated)."""
        c_kv, k_rope = self.kv_a_proj(x).split([self.rank, self.d_rope], dim=-1)
        return self.kv_a_norm(c_kv).unsqueeze(1), k_rope.unsqueeze(1)

    def expand(self, c_kv: Tensor, k_rope: Tensor) -> tuple[Tensor, Tensor]:
        """Keys ``(B, H, S, d_n + d_r)`` and values ``(B, H, S, d_v)`` from the cached
        ``c_kv (B, 1, S, r)`` and rotated ``k_rope (B, 1, S, d_r)``."""
        b, _, s, _ = c_kv.shape
        kv = self.kv_b_proj(c_kv.squeeze(1)).view(b, s, self.n_heads, -1).transpose(1, 2)
        k_nope, v = kv.split([self.d_nope, self.d_v], dim=-1)  # (B, H, S, d_n), (B, H, S, d_v)
        k = k_nope.new_empty(b, self.n_heads, s, self.d_nope + self.d_rope)
        k[..., : self.d_nope] = k_nope
        k[..., self.d_nope :] = k_rope  # the one rotary key, broadcast over heads
        return k, v

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        b, t, _ = x.shape
        q_nope, q_rope = self._queries(x).split([self.d_nope, self.d_rope], dim=-1)
        c_kv, k_rope = self.latents(x)
        if self.rotary is not None:
            q_rope = self.rotary.rotate_heads(q_rope, inputs.positions, inputs.rope)  # type: ignore[operator]
            k_rope = self.rotary.rotate_heads(k_rope, inputs.positions, inputs.rope)  # type: ignore[operator]
        if inputs.cache is not None:
            c_kv, k_rope = inputs.cache.update(c_kv, k_rope)  # (B, 1, S, r), (B, 1, S, d_r)
        k, v = self.expand(c_kv, k_rope)
        q = q_nope.new_empty(b, self.n_heads, t, self.d_nope + self.d_rope)
        q[..., : self.d_nope] = q_nope
        q[..., self.d_nope :] = q_rope  # (B, H, T, d_n + d_r)
        mask, is_causal = aligned_mask(t, k.shape[2], inputs.attn_mask, inputs.is_causal, x.device)
        y = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, T, d_v)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.d_v))


def build_mla(config: MLAConfig, ctx: BuildContext) -> TokenMixer:
    return MultiHeadLatentAttention(
        ctx.d_model,
        n_heads=config.n_heads,
        kv_lora_rank=config.kv_lora_rank,
        q_lora_rank=config.q_lora_rank,
        qk_nope_head_dim=config.qk_nope_head_dim,
        qk_rope_head_dim=config.qk_rope_head_dim,
        v_head_dim=config.v_head_dim,
        bias=config.bias,
        norm_eps=config.norm_eps,
        dropout=config.dropout,
        rotary=ctx.rotary,
    )
