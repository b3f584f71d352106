"""Per-layer key/value cache, allocated once to its full length.

Each attention layer owns a ``LayerKVCache``; all layers share one write offset
(``KVCache.length``) that the model advances after a forward pass. Buffers are
allocated on the first write, from the shapes of the first keys, so the cache
needs no knowledge of heads or head size (works for MHA, GQA and MQA alike).

Cross-attention keys and values depend only on the context (encoder output, image
features), never on the tokens generated so far: each layer's ``CrossKVCache`` holds
them from the prefill on, so decode steps project the context once per prompt instead
of once per step.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor


class CrossKVCache:
    """One layer's cross-attention keys and values ``(B, H_kv, S_ctx, D_h)``, set once.

    ``enabled=False`` makes ``get`` recompute every call (the behaviour without a cache;
    tests compare the two).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def get(self, compute: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """The stored ``(k, v)``, or ``compute()``'s result, stored for the next step."""
        if self.k is not None and self.v is not None:
            return self.k, self.v
        k, v = compute()
        if self.enabled:
            self.k, self.v = k, v
        return k, v

    def _map(self, fn: Callable[[Tensor], Tensor]) -> None:
        if self.k is not None and self.v is not None:
            self.k, self.v = fn(self.k), fn(self.v)


class LayerKVCache:
    """Keys and values of one layer: ``(B, H_kv, max_len, D_h)`` each, plus ``cross``."""

    def __init__(self, parent: KVCache) -> None:
        self.parent = parent
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.cross = CrossKVCache(parent.cache_cross)

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write new ``k, v (B, H_kv, T, D_h)`` at the current offset; return all keys/values so far."""
        start = self.parent.length
        end = start + k.shape[2]
        if end > self.parent.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.parent.max_len}")
        if self.k is None or self.v is None:
            b, h, _, d = k.shape
            self.k = k.new_zeros(b, h, self.parent.max_len, d)
            self.v = v.new_zeros(b, h, self.parent.max_len, v.shape[-1])
        n = end - start  # narrow: one view op each, where [:, :, a:b] dispatches three
        self.k.narrow(2, start, n).copy_(k)
        self.v.narrow(2, start, n).copy_(v)
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)


class KVCache:
    """The cache of a whole model: one ``LayerKVCache`` per layer and a shared length."""

    def __init__(self, n_layers: int, max_len: int, *, cache_cross: bool = True) -> None:
        self.max_len = max_len
        self.length = 0
        self.cache_cross = cache_cross
        self.layers = [LayerKVCache(self) for _ in range(n_layers)]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as written (called once per model forward)."""
        self.length += n

    def repeat_interleave(self, n: int) -> None:
        """Repeat every batch row ``n`` times: one prompt prefill serves ``n`` samples."""
        for layer in self.layers:
            if layer.k is not None and layer.v is not None:
                layer.k = layer.k.repeat_interleave(n, dim=0)
                layer.v = layer.v.repeat_interleave(n, dim=0)
            layer.cross._map(lambda t: t.repeat_interleave(n, dim=0))

    def select(self, index: Tensor) -> None:
        """Keep only batch rows ``index`` (e.g. drop finished sequences)."""
        for layer in self.layers:
            if layer.k is not None and layer.v is not None:
                layer.k = layer.k.index_select(0, index)
                layer.v = layer.v.index_select(0, index)
            layer.cross._map(lambda t: t.index_select(0, index))

    @property
    def nbytes(self) -> int:
        return sum(
            (t.numel() * t.element_size())
            for layer in self.layers
            for t in (layer.k, layer.v, layer.cross.k, layer.cross.v)
            if t is not None
        )


__all__ = ["CrossKVCache", "KVCache", "LayerKVCache"]
