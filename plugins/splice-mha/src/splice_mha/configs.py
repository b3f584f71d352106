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
