"""Tiny models and arithmetic batches for the forgetting regularizer tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from splice.data.arithmetic import ArithmeticTask
from splice.data.tokenizer import CharTokenizer
from splice.models.build import build_model
from torch import nn

TOKENIZER = CharTokenizer()


def _make_model(seed: int = 0, *, d_model: int = 16, n_layers: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": TOKENIZER.vocab_size,
            "d_model": d_model,
            "n_layers": n_layers,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )


def _make_batch(op: str = "+", *, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ``bos + prompt + completion + eos`` rows; labels only on the completion."""
    rows, labels = [], []
    for ex in ArithmeticTask(op, max_digits=2).sample("train", n, seed=seed):
        prompt = TOKENIZER.encode(ex.prompt, bos=True)
        completion = TOKENIZER.encode(ex.completion, eos=True)
        rows.append(prompt + completion)
        labels.append([-100] * len(prompt) + completion)
    t = max(len(r) for r in rows)
    ids = torch.tensor([r + [TOKENIZER.pad_id] * (t - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (t - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in rows])
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


def _perturb(model: nn.Module, scale: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """Add ``scale * N(0, 1)`` to every parameter; returns the deltas by name."""
    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            d = scale * torch.randn(p.shape, generator=gen)
            p.add_(d)
            deltas[name] = d
    return deltas


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(seed=0, d_model=16, n_layers=1)``: a tiny seeded decoder."""
    return _make_model


@pytest.fixture
def make_batch() -> Callable[..., dict[str, Any]]:
    """``make_batch(op="+", n=4, seed=0)``: an SFT-style arithmetic batch."""
    return _make_batch


@pytest.fixture
def perturb() -> Callable[..., dict[str, torch.Tensor]]:
    """``perturb(model, scale, seed=1)``: move every parameter by Gaussian noise."""
    return _perturb
