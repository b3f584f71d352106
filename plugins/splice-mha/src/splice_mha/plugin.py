"""splice-mha entry point: registers multi-head self- and cross-attention and multi-head latent attention."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_mha.configs import CrossAttentionConfig, MHAConfig, MLAConfig


@hookimpl
def register_token_mixers(register: Any) -> None:
    register(MHAConfig, "splice_mha.attention:build_mha")
    register(CrossAttentionConfig, "splice_mha.attention:build_cross_attention")
    register(MLAConfig, "splice_mha.latent:build_mla")
