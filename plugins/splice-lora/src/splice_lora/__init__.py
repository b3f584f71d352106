"""splice-lora: LoRA adapters (rsLoRA, DoRA, PiSSA, LoRA+) and PEFT-format adapter files."""

from splice_lora.adapter import (
    LoRAAdapter,
    active_adapter,
    adapter_names,
    adapter_state_dict,
    apply_lora,
    lora_layers,
    merge_adapter,
    merge_and_unload,
    set_active_adapter,
    unmerge_adapter,
)
from splice_lora.config import LoRAConfig
from splice_lora.layers import AdapterSpec, LoRAEmbedding, LoRALayer, LoRALinear
from splice_lora.peft_format import load_peft_adapter, save_peft_adapter

__all__ = [
    "AdapterSpec",
    "LoRAAdapter",
    "LoRAConfig",
    "LoRAEmbedding",
    "LoRALayer",
    "LoRALinear",
    "active_adapter",
    "adapter_names",
    "adapter_state_dict",
    "apply_lora",
    "load_peft_adapter",
    "lora_layers",
    "merge_adapter",
    "merge_and_unload",
    "save_peft_adapter",
    "set_active_adapter",
    "unmerge_adapter",
]
