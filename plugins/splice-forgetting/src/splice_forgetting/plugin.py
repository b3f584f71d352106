"""splice-forgetting entry point: regularizers against catastrophic forgetting."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl


@hookimpl
def register_regularizers(register: Any) -> None:
    """Registered as the regularizers are implemented (see splice_forgetting.config)."""
