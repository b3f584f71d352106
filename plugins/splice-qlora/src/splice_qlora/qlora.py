"""QLoRA: quantize a model's frozen base linears to 4 bits, then put LoRA on top.

``apply_qlora(model, config)`` = ``quantize(model, config.quantization)`` +
``splice_lora.apply_lora(model, config.lora())``. Each targeted layer becomes
``LoRALinear(Linear4bit)``: the forward dequantizes the 4-bit weight block by block inside
bitsandbytes' matmul and adds ``s * B A x``; only ``A`` and ``B`` are trainable, and
backward recomputes the dequantized weight for the input gradient instead of storing it.
"""

from __future__ import annotations

from typing import Any

from splice_lora.adapter import LoRAAdapter, apply_lora
from torch import nn

from splice_qlora.configs import QLoRAConfig
from splice_qlora.quantizers import quantize


def apply_qlora(model: nn.Module, config: QLoRAConfig) -> nn.Module:
    """Quantize ``config.quantization``'s targets, then apply the LoRA adapter; returns ``model``."""
    quantize(model, config.quantization)
    return apply_lora(model, config.lora())


class QLoRAAdapter(LoRAAdapter):
    """The registered ``qlora`` adapter: LoRA's enable/disable/merge/save on a 4-bit base.

    ``merge`` returns plain ``nn.Linear`` layers holding the dequantized, merged weights.
    """

    def __init__(self, config: QLoRAConfig) -> None:
        super().__init__(config.lora())
        self.qlora_config = config

    def apply(self, model: nn.Module) -> nn.Module:
        return apply_qlora(model, self.qlora_config)


def build_qlora(config: QLoRAConfig, ctx: Any = None) -> QLoRAAdapter:
    """Registry factory: the adapter a ``{"type": "qlora", ...}`` config describes."""
    return QLoRAAdapter(config)
