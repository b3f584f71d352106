"""Configs of splice-mha's token mixers (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator
from splice.config import ComponentConfig


class MHAConfig(ComponentConfig):
    """Scaled dot-product multi-head self-attention.

    ``n_kv_heads < n_heads`` gives grouped-query attention (``n_kv_heads == 1``: multi-query).
    ``head_dim`` defaults to ``d_model // n_heads``.
    """

    type: Literal["mha"] = "mha"
    n_heads: PositiveInt
    n_kv_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    qk_norm: bool = False
    bias: bool = False
    qkv_bias: bool | None = None
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _kv_divides(self) -> MHAConfig:
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} (grouped-query attention)"
            )
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def head_dim_for(self, d_model: int) -> int:
        return self.head_dim or d_model // self.n_heads

    def check_compatible(self, *, d_model: int) -> None:
        """Raise ValueError naming ``n_heads`` if heads cannot split ``d_model`` evenly."""
        if self.head_dim is None and d_model % self.n_heads:
            raise ValueError(f"n_heads: {self.n_heads} heads do not divide d_model={d_model}")


class CrossAttentionConfig(MHAConfig):
    """Multi-head attention whose keys and values come from a context (encoder output, image)."""

    type: Literal["cross_attention"] = "cross_attention"  # type: ignore[assignment]
    gated: bool = False


class MLAConfig(ComponentConfig):
    """Multi-head latent attention (DeepSeek-V2/V3): keys and values from a low-rank latent.

    Each token's keys and values are rebuilt from one compressed latent ``c_kv`` of width
    ``kv_lora_rank`` (RMS-normalised) plus one rotary key of width ``qk_rope_head_dim``
    shared by every head; the KV cache stores just those two, ``kv_lora_rank +
    qk_rope_head_dim`` numbers per token and layer, instead of ``2 * n_kv_heads * head_dim``.
    Queries go through their own low-rank bottleneck when ``q_lora_rank`` is set.

    Attributes:
        n_heads: attention heads ``H``.
        kv_lora_rank: width ``r`` of the cached latent.
        q_lora_rank: width of the query bottleneck; None projects queries directly.
        qk_nope_head_dim: per-head query/key size without position information.
        qk_rope_head_dim: per-head query / shared key size rotated by RoPE (sizes the
            model's RoPE: ``head_dim_for`` returns it).
        v_head_dim: per-head value size.
        bias: bias on the two down-projections and the output projection (DeepSeek's
            ``attention_bias``).
        norm_eps: eps of the RMSNorms on the latents.
    """

    type: Literal["mla"] = "mla"
    n_heads: PositiveInt
    kv_lora_rank: PositiveInt
    q_lora_rank: PositiveInt | None = None
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt
    bias: bool = False
    norm_eps: float = Field(default=1e-6, gt=0.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _even_rope(self) -> MLAConfig:
        if self.qk_rope_head_dim % 2:
            raise ValueError(
                f"qk_rope_head_dim={self.qk_rope_head_dim} must be even (RoPE rotates pairs)"
            )
        return self

    def head_dim_for(self, d_model: int) -> int:
        """The rotated width, which sizes the model's RoPE."""
        return self.qk_rope_head_dim

    def cache_width(self) -> int:
        """Numbers cached per token and layer: the latent plus the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim
