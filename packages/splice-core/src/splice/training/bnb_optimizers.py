"""bitsandbytes' 8-bit and paged AdamW, selectable as ``optimizer.name`` in a TrainConfig.

``adamw_8bit`` keeps AdamW's two moments in 8 bits (blockwise dynamic quantization,
Dettmers et al. 2022): 2 bytes of state per parameter instead of 8. ``paged_adamw`` /
``paged_adamw_8bit`` also page the state between GPU and host memory under memory
pressure, which needs CUDA. bitsandbytes comes with splice-qlora; the core only imports it
when one of these names is chosen.
"""

from __future__ import annotations

from typing import Any

import torch

NAMES = {
    "adamw_8bit": "AdamW8bit",
    "paged_adamw": "PagedAdamW",
    "paged_adamw_8bit": "PagedAdamW8bit",
}


def build_bnb_optimizer(groups: list[dict[str, Any]], cfg: Any) -> torch.optim.Optimizer:
    """The bitsandbytes optimizer ``cfg.name`` names, over ``groups``.

    Raises:
        ImportError: bitsandbytes is not installed (says how to get it).
        ValueError: a paged optimizer on parameters that are not on a CUDA device.
    """
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ImportError(
            f"optimizer.name={cfg.name!r} needs bitsandbytes: `uv add splice-qlora` "
            f"(it depends on bitsandbytes) or `uv add bitsandbytes` ({exc})"
        ) from exc
    devices = {p.device.type for g in groups for p in g["params"]}
    if cfg.name.startswith("paged_") and devices != {"cuda"}:
        raise ValueError(
            f"optimizer.name={cfg.name!r}: paged optimizers page their state between GPU and "
            f"host memory and need CUDA, but the parameters are on {sorted(devices)}; "
            "use 'adamw_8bit' (which runs on CPU too) or 'adamw'"
        )
    cls = getattr(bnb.optim, NAMES[cfg.name])
    opt: torch.optim.Optimizer = cls(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    return opt
