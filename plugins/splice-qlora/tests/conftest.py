"""Tiny seeded decoders for the quantizer and QLoRA tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from splice.models.build import build_model
from torch import nn


def _make_model(
    seed: int = 0, *, d_model: int = 64, n_layers: int = 2, vocab: int = 40
) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": vocab,
            "d_model": d_model,
            "n_layers": n_layers,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(seed=0, d_model=64, n_layers=2, vocab=40)``: a tiny seeded decoder."""
    return _make_model
