"""Tiny seeded decoders and batches for the LoRA tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from splice.models.build import build_model
from torch import nn


def _make_model(
    seed: int = 0, *, d_model: int = 16, n_layers: int = 2, vocab: int = 32, **extra: Any
) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": vocab,
            "d_model": d_model,
            "n_layers": n_layers,
            "max_seq_len": 32,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 4, "n_kv_heads": 2},
                "channel_mixer": {"type": "swiglu"},
            },
            **extra,
        }
    )


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(seed=0, d_model=16, n_layers=2, vocab=32)``: a tiny Llama-like decoder."""
    return _make_model


@pytest.fixture
def ids() -> torch.Tensor:
    """``(2, 12)`` random token ids below 32."""
    return torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(5))


def _randomize_adapters(model: nn.Module, scale: float = 0.2, seed: int = 1) -> None:
    """Random values in every LoRA parameter (B starts at zero, which would hide bugs); DoRA
    magnitudes are moved by noise instead of replaced."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" not in name:
                continue
            noise = scale * torch.randn(p.shape, generator=gen)
            p.add_(noise) if "magnitude" in name else p.copy_(noise)


@pytest.fixture
def randomize() -> Callable[..., None]:
    """``randomize(model, scale=0.2, seed=1)``: random LoRA weights."""
    return _randomize_adapters
