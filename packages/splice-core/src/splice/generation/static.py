"""A compiled decode step: the same model call, with shapes that never change.

Eager decoding spends most of a small model's step dispatching ~160 tiny ops. With
``SamplingConfig(compile=True)``, ``generate`` prefills eagerly into the usual
``KVCache`` and then decodes through ``StaticKVCache``, a view of the same buffers in
which every step has identical shapes: the new key/value is written at a tensor index
(``index_copy_``), attention always reads all ``max_len`` slots, and the key mask
(real prompt tokens and slots written so far) hides the rest. ``torch.compile`` then
traces one step once per batch shape and reuses it, fusing the elementwise work.

Nothing in the model changes: any model that takes ``attention_mask`` over cache + input
and calls ``cache.layers[i].update`` / ``cache.advance`` (``DecoderLM`` and the decoder of
``EncoderDecoderLM`` do) decodes this way. The first call for a batch shape pays the
compile (seconds); later calls reuse it.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor, nn

from splice.generation.kv_cache import CrossKVCache, KVCache


class _StaticLayer:
    """One layer's buffers ``(B, H_kv, max_len, D_h)``; writes at the shared slot."""

    def __init__(self, parent: StaticKVCache, k: Tensor, v: Tensor) -> None:
        self.parent, self.k, self.v = parent, k, v
        self.cross = CrossKVCache()  # replaced by the prefilled layer's (see StaticKVCache)

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v (B, H_kv, 1, D_h)`` at the slot; return all ``max_len`` slots."""
        self.k.index_copy_(2, self.parent.slot, k)
        self.v.index_copy_(2, self.parent.slot, v)
        return self.k, self.v


class StaticKVCache:
    """Decode-time view of a prefilled ``KVCache`` whose shapes never change.

    ``length`` is constant (``max_len - 1``): to the model, one new token always follows
    ``max_len - 1`` cached positions, so masks are ``(B, 1, 1, max_len)`` at every step and
    the caller's ``attention_mask`` says which slots hold real keys. ``slot`` (a 1-element
    long tensor) is where the next token's key/value goes.
    """

    def __init__(self, cache: KVCache) -> None:
        if not cache.layers or any(layer.k is None or layer.v is None for layer in cache.layers):
            raise ValueError("StaticKVCache needs a prefilled KVCache (run the prompt first)")
        if cache.length >= cache.max_len:
            raise ValueError(f"the cache is full ({cache.length} of {cache.max_len} positions)")
        self.max_len = cache.max_len
        self.length = cache.max_len - 1
        self.layers = [_StaticLayer(self, layer.k, layer.v) for layer in cache.layers]  # type: ignore[arg-type]
        for static, layer in zip(self.layers, cache.layers):
            static.cross = layer.cross  # cross-attention K/V from the prefill
        device = self.layers[0].k.device
        self.slot = torch.tensor([cache.length], dtype=torch.long, device=device)

    def advance(self, n: int) -> None:
        """Move the write slot ``n`` positions on (in place: no new tensor, no recompile)."""
        self.slot.add_(n)


def _step(
    model: nn.Module,
    tok: Tensor,
    positions: Tensor,
    key_mask: Tensor,
    cache: StaticKVCache,
    context: Tensor | None,
    context_mask: Tensor | None,
) -> Tensor:
    """One decode step: mark the slot as a real key, run the model, return ``(N, V)`` logits."""
    key_mask.index_fill_(1, cache.slot, True)
    out = model(
        tok,
        positions=positions,
        cache=cache,
        attention_mask=key_mask,
        context=context,
        context_mask=context_mask,
    )
    logits: Tensor = out.logits[:, -1]
    return logits


# One compiled function for every model: dynamo keys its cache on the model and shapes.
_compiled_step: Any = None
# The compile stance is process-wide: one thread's guard-skipping step must not overlap
# another thread's first (guard-checking) step.
_stance_lock = threading.Lock()


class CompiledStep:
    """``_step`` under ``torch.compile`` (static shapes), for one ``generate`` call.

    The first call checks the compiled step's guards (model, shapes, dtypes) as usual and
    compiles if no entry matches; later calls of the same ``generate`` skip evaluating
    them (``skip_guard_eval_unsafe``): nothing they check can change between two decode
    steps of one call, and on a small model checking them costs ~15% of a step.
    """

    def __init__(self) -> None:
        self.checked = False

    def __call__(
        self,
        model: nn.Module,
        tok: Tensor,
        positions: Tensor,
        key_mask: Tensor,
        cache: StaticKVCache,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(N, V)`` for ``tok (N, 1)`` at ``positions (N, 1)``.

        Args:
            key_mask: ``(N, max_len)`` bool, True for real keys; updated in place.
            context, context_mask: cross-attention inputs, as for the model.
        """
        global _compiled_step
        if _compiled_step is None:
            _compiled_step = torch.compile(_step, dynamic=False)
        # generate() forces eager around this; the compiled step is the one exception.
        with (
            _stance_lock,
            torch.compiler.set_stance("default", skip_guard_eval_unsafe=self.checked),
        ):
            logits: Tensor = _compiled_step(
                model, tok, positions, key_mask, cache, context, context_mask
            )
        self.checked = True
        return logits


__all__ = ["CompiledStep", "StaticKVCache"]
