"""The pre-allocated KV cache: writes, overflow, repeating and selecting rows."""

from __future__ import annotations

import pytest
import torch
from splice.generation.kv_cache import KVCache


def test_update_writes_at_the_shared_offset_and_returns_the_prefix() -> None:
    cache = KVCache(n_layers=2, max_len=6)
    k, v = torch.randn(2, 1, 4, 3), torch.randn(2, 1, 4, 5)
    keys, values = cache.layers[0].update(k, v)
    assert keys.shape == (2, 1, 4, 3) and values.shape == (2, 1, 4, 5)
    assert cache.layers[0].k is not None and cache.layers[0].k.shape == (2, 1, 6, 3)
    cache.advance(4)
    k2, v2 = torch.randn(2, 1, 1, 3), torch.randn(2, 1, 1, 5)
    keys, values = cache.layers[0].update(k2, v2)
    assert torch.equal(keys, torch.cat([k, k2], dim=2))
    assert torch.equal(values, torch.cat([v, v2], dim=2))


def test_overflow_is_an_error_naming_max_len() -> None:
    cache = KVCache(n_layers=1, max_len=3)
    with pytest.raises(ValueError, match="max_len 3"):
        cache.layers[0].update(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2))


def test_repeat_interleave_and_select_rows() -> None:
    cache = KVCache(n_layers=1, max_len=4)
    k = torch.arange(2.0)[:, None, None, None].expand(2, 1, 2, 1).contiguous()
    cache.layers[0].update(k, k)
    cache.advance(2)
    cache.repeat_interleave(3)
    layer = cache.layers[0]
    assert layer.k is not None and layer.k[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    cache.select(torch.tensor([0, 4]))
    assert layer.k[:, 0, 0, 0].tolist() == [0, 1]
    assert cache.nbytes == 2 * (2 * 1 * 4 * 1) * 4
