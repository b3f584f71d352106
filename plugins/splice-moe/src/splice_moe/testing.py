"""Tiny MoE decoder configs and a learnable toy batch source, for tests and examples.

Kept in the package (like ``splice.testing``) so test modules share them without being
a Python package themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from splice.models.configs import DecoderConfig, LayerOverride
from splice.training.stream import ListBatches

V, D = 32, 16
ATTN = {"type": "mha", "n_heads": 2}


def block(ffn: Any) -> dict[str, Any]:
    return {
        "type": "pre_norm",
        "token_mixer": ATTN,
        "channel_mixer": ffn,
        "norm": {"type": "rmsnorm"},
    }


def moe_decoder(
    moe: dict[str, Any], *, n_layers: int = 2, every_other: bool = False
) -> DecoderConfig:
    """A tiny decoder with MoE on every layer, or (``every_other``) on layers 1, 3, ..."""
    if every_other:
        return DecoderConfig(
            vocab_size=V, d_model=D, n_layers=n_layers, max_seq_len=32,
            block=block({"type": "swiglu"}),
            overrides=[LayerOverride(every=2, start=1, block=block({"type": "moe", **moe}))],
        )  # fmt: skip
    return DecoderConfig(
        vocab_size=V, d_model=D, n_layers=n_layers, max_seq_len=32,
        block=block({"type": "moe", **moe}),
    )  # fmt: skip


def copy_task(n: int = 64, t: int = 12, seed: int = 0, batch_size: int = 8) -> ListBatches:
    """Sequences ``a b c ... a b c ...`` (a repeated random half): learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(1, V, (n, t // 2), generator=g)
    seqs = torch.cat([half, half], dim=1)

    def collate(items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = torch.stack(items)
        return {"input_ids": ids, "labels": ids.clone()}

    return ListBatches(list(seqs), collate, batch_size=batch_size, seed=seed)
