"""splice-lora: LoRA adapters (rsLoRA, DoRA, PiSSA, LoRA+) and PEFT-format adapter files.

Names are imported on first use (PEP 562), so loading the ``splice`` entry point
(``splice_lora.plugin``, which imports this package first) does not import torch and
``splice plugins`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LoRAAdapter": "adapter",
    "active_adapter": "adapter",
    "adapter_names": "adapter",
    "adapter_state_dict": "adapter",
    "apply_lora": "adapter",
    "lora_layers": "adapter",
    "merge_adapter": "adapter",
    "merge_and_unload": "adapter",
    "set_active_adapter": "adapter",
    "unmerge_adapter": "adapter",
    "LoRAConfig": "configs",
    "AdapterSpec": "layers",
    "LoRAEmbedding": "layers",
    "LoRALayer": "layers",
    "LoRALinear": "layers",
    "load_peft_adapter": "peft_format",
    "save_peft_adapter": "peft_format",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'splice_lora' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"splice_lora.{module}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_WHERE)
