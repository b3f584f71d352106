"""Autoregressive generation with a pre-allocated KV cache.

``generate(model, prompts, SamplingConfig(...), pad_id=...)`` lives in
``splice.generation.sampling``; logit filters in ``splice.generation.logits``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"generate", "generate_text", "GenerationOutput", "SamplingConfig"}


def __getattr__(name: str) -> Any:
    # Lazy so that importing the KV cache (done by every model) stays cheap.
    if name in _LAZY:
        from splice.generation import sampling

        return getattr(sampling, name)
    raise AttributeError(f"module 'splice.generation' has no attribute {name!r}")
