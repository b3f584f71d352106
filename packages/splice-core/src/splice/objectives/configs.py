"""Configs of the core's objectives (torch-free, so the registry can load them cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from splice.config import ComponentConfig


class SFTConfig(ComponentConfig):
    """Supervised fine-tuning: next-token cross-entropy on completion tokens only.

    Attributes:
        chunk_size: project hidden states to the vocabulary this many tokens at a time, so the
            full ``(N, V)`` logits tensor is never held (forward or backward); None = one chunk.
        aux_loss_weight: multiplier of the model's auxiliary loss (e.g. MoE balancing), if any.
    """

    type: Literal["sft"] = "sft"
    chunk_size: PositiveInt | None = None
    aux_loss_weight: float = Field(default=1.0, ge=0.0)
