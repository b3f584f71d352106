"""The optimizer a run trains with, what it trains, and seeding.

``build_optimizer`` groups parameters by weight decay and by the learning-rate multipliers
modules declare (``splice.interfaces.ParamLRScaled``); ``trainable_summary`` counts what
trains; ``seed_everything`` seeds every generator a run draws from.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from splice.interfaces import ParamLRScaled
from splice.training.configs import OptimizerConfig


def param_lr_scales(model: nn.Module) -> dict[int, float]:
    """``id(param) -> learning-rate multiplier`` declared by modules of ``model``.

    A module may carry ``param_lr_scale: dict[str, float]`` (``ParamLRScaled``) keyed by its own parameter names
    (as ``module.named_parameters()`` spells them); e.g. LoRA+ gives ``lora_B`` a larger rate.
    Parameters nobody names get 1.0 (absent from the dict).
    """
    scales: dict[int, float] = {}
    for module in model.modules():
        if not isinstance(module, ParamLRScaled) or not module.param_lr_scale:
            continue
        declared = module.param_lr_scale
        for name, p in module.named_parameters():
            if name in declared:
                scales[id(p)] = float(declared[name])
    return scales


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW (or SGD) over the parameters that require grad; frozen ones get no state.

    Matrices (ndim >= 2) are weight-decayed, vectors (norm scales, biases) are not.
    Parameters with a learning-rate multiplier (``param_lr_scale`` on their module, see
    ``param_lr_scales``) get their own group carrying ``lr_scale``; the trainer sets each
    group's rate to ``lr_scale`` times the scheduled rate.
    """
    scales = param_lr_scales(model)
    buckets: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for p in model.parameters():  # shared (tied) parameters are yielded once
        if p.requires_grad:
            buckets.setdefault((p.ndim >= 2, scales.get(id(p), 1.0)), []).append(p)
    if not buckets:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    groups: list[dict[str, Any]] = []
    for (decayed, scale), ps in sorted(buckets.items(), key=lambda kv: (kv[0][1], not kv[0][0])):
        group: dict[str, Any] = {"params": ps, "weight_decay": cfg.weight_decay if decayed else 0.0}
        if scale != 1.0:
            group["lr_scale"] = scale
        groups.append(group)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name != "adamw":  # adamw_8bit, paged_adamw(_8bit): bitsandbytes
        from splice.training.bnb_optimizers import build_bnb_optimizer

        return build_bnb_optimizer(groups, cfg)
    fused = cfg.fused
    if fused is None:  # the fused kernel is one pass over all params: less per-step overhead
        fused = all(
            p.dtype in (torch.float32, torch.bfloat16, torch.float16)
            for g in groups
            for p in g["params"]
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def build_run_optimizer(
    model: nn.Module, extra_modules: Mapping[str, nn.Module], cfg: OptimizerConfig
) -> torch.optim.Optimizer:
    """``build_optimizer`` over ``model``'s parameters first, then those of an objective's own
    ``extra_modules`` (e.g. PPO's value head)."""
    trained = nn.ModuleList([model, *extra_modules.values()]) if extra_modules else model
    return build_optimizer(trained, cfg)


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """``{"trainable_params", "total_params", "trainable_percent"}`` (tied weights once)."""
    params = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100.0 * trainable / max(total, 1), 4),
    }


def seed_everything(seed: int) -> None:
    """Seed torch, Python ``random`` and NumPy from one integer."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


__all__ = [
    "build_optimizer",
    "build_run_optimizer",
    "param_lr_scales",
    "seed_everything",
    "trainable_summary",
]
