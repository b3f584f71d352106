"""Small helpers shared by the vision modules: validate a config dict and build it."""

from __future__ import annotations

from typing import Any

from splice.interfaces import BuildContext
from torch import nn


def validated(kind: str, config: Any) -> Any:
    """A registered config instance of ``kind`` from a dict with ``type`` (or an instance)."""
    from splice.registry import get_registry

    if isinstance(config, dict):
        return get_registry().get(kind, config["type"]).config_cls.model_validate(config)
    return config


def build(kind: str, config: Any, ctx: BuildContext) -> Any:
    """Build a core component (block, norm, ...) through the registry."""
    from splice.registry import get_registry

    return get_registry().build(kind, validated(kind, config), ctx)


def layer_norm(d: int, eps: float) -> nn.Module:
    """The core's LayerNorm (``layernorm`` from the registry) of width ``d``."""
    return build("norm", {"type": "layernorm", "eps": eps}, BuildContext(d_model=d))  # type: ignore[no-any-return]
