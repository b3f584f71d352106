"""Tiny configs shared by the VLM tests."""

from __future__ import annotations

from typing import Any

V = 40  # vocabulary; the last id is the image placeholder
IMG = V - 1
D = 32


def lm(**kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "type": "decoder",
        "vocab_size": V,
        "d_model": D,
        "n_layers": 2,
        "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
        "init_std": 0.2,  # peaked logits: greedy decoding has no near-ties
    }
    cfg.update(kw)
    return cfg


def vit(**kw: Any) -> dict[str, Any]:
    return {"type": "vit", "patch_size": 8, "d_model": 24, "n_heads": 4, "n_layers": 1, **kw}
