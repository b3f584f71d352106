"""Export a (Q)LoRA-trained model as a plain float checkpoint.

``merge_dequantized(model)``: every LoRA layer is merged into its base (a 4-bit base is
dequantized first, so the merged weight is ``dequant(W_4bit) + s B A``), remaining quantized
layers are dequantized, and the result is an ordinary float model with ``nn.Linear`` layers.
``export_merged(model, path)`` then writes it with ``splice.hf.save_pretrained`` (a Hugging
Face folder that ``transformers`` loads) when the model is a ``DecoderLM``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from splice.quantization import dequantize_model
from splice_lora.adapter import lora_layers, merge_and_unload
from torch import nn


def merge_dequantized(model: nn.Module, *, dtype: torch.dtype | None = None) -> nn.Module:
    """Merge the active LoRA adapter and dequantize everything, in place; returns ``model``."""
    if lora_layers(model):
        merge_and_unload(model)
    return dequantize_model(model, dtype=dtype)


def export_merged(
    model: nn.Module, path: str | Path, *, tokenizer: Any = None, dtype: torch.dtype | None = None
) -> Path:
    """``merge_dequantized`` then ``splice.hf.save_pretrained(model, path)``; returns ``path``."""
    from splice.hf import save_pretrained

    merge_dequantized(model, dtype=dtype)
    return save_pretrained(model, path, tokenizer=tokenizer)
