"""splice-qlora entry point: bitsandbytes quantizers (nf4, fp4, int8) and the qlora adapter."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_qlora.configs import FP4Config, Int8Config, NF4Config, QLoRAConfig


@hookimpl
def register_quantizers(register: Any) -> None:
    register(NF4Config, "splice_qlora.quantizers:build_four_bit")
    register(FP4Config, "splice_qlora.quantizers:build_four_bit")
    register(Int8Config, "splice_qlora.quantizers:build_int8")


@hookimpl
def register_adapters(register: Any) -> None:
    register(QLoRAConfig, "splice_qlora.qlora:build_qlora")
