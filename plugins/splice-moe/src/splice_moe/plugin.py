"""splice-moe entry point: registers the ``moe`` channel mixer."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_moe.configs import MoEConfig


@hookimpl
def register_channel_mixers(register: Any) -> None:
    register(MoEConfig, "splice_moe.layer:build_moe")


@hookimpl
def register_hf_architectures(register: Any) -> None:
    register("mixtral", "splice_moe.hf:mixtral_architecture")
    for family in ("qwen2_moe", "qwen3_moe", "deepseek_v3", "ernie4_5_moe"):
        register(family, f"splice_moe.hf_families:{family}")
