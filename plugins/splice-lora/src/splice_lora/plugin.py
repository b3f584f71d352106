"""splice-lora entry point: registers the ``lora`` adapter (torch is imported lazily)."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_lora.configs import LoRAConfig


@hookimpl
def register_adapters(register: Any) -> None:
    register(LoRAConfig, "splice_lora.adapter:build_lora")
