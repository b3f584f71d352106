"""Dropout that costs nothing when it is off."""

from __future__ import annotations

from torch import nn


def dropout_or_identity(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or ``nn.Identity()`` when ``p == 0`` (no dropout op per call).

    Dropout has no parameters or buffers, so the choice never changes a state dict.
    """
    return nn.Dropout(p) if p > 0 else nn.Identity()
