"""Build any registered model from its config."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_model(config: Any) -> nn.Module:
    """Build the model described by a registered model config (or a dict with ``type``)."""
    from pydantic import TypeAdapter

    from splice.config import component_field
    from splice.registry import get_registry

    cfg = TypeAdapter(component_field("model")).validate_python(config)
    return get_registry().build("model", cfg, None)  # type: ignore[no-any-return]
