"""splice-mha entry point: registers multi-head self- and cross-attention, multi-head latent
attention, and the Hugging Face layouts built on them (Llama, Qwen2, GPT-2)."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_mha.configs import CrossAttentionConfig, MHAConfig, MLAConfig


@hookimpl
def register_token_mixers(register: Any) -> None:
    register(MHAConfig, "splice_mha.attention:build_mha")
    register(CrossAttentionConfig, "splice_mha.attention:build_cross_attention")
    register(MLAConfig, "splice_mha.latent:build_mla")


@hookimpl
def register_hf_architectures(register: Any) -> None:
    register("llama", "splice_mha.hf:llama_architecture")
    register("qwen2", "splice_mha.hf:qwen2_architecture")
    register("gpt2", "splice_mha.hf:gpt2_architecture")
