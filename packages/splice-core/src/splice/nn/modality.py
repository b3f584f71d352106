"""Per-token modality ids, for layers that treat text and image tokens differently.

A model that mixes modalities in one sequence (an early-fusion VLM) knows which positions
hold image tokens; a channel mixer deep inside the LM (an MoE layer whose experts are
isolated by modality, as in ERNIE 4.5) needs that, but a ``ChannelMixer`` is called with
``x`` alone. The model sets the ids around its LM call with ``token_modality(ids)``; a
layer reads ``current_token_modality()``. Nothing set means every token is text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor

TEXT, IMAGE = 0, 1

_CURRENT: ContextVar[Tensor | None] = ContextVar("splice_token_modality", default=None)


@contextmanager
def token_modality(ids: Tensor | None) -> Iterator[None]:
    """Within the block, ``current_token_modality()`` is ``ids`` ``(B, T)`` (0 text, 1 image)."""
    token = _CURRENT.set(ids)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_token_modality() -> Tensor | None:
    """The ``(B, T)`` modality ids set by the running model, or None (all text)."""
    return _CURRENT.get()


__all__ = ["IMAGE", "TEXT", "current_token_modality", "token_modality"]
