"""Large scratch tensors reused from one training step to the next.

PyTorch has no caching allocator on CPU: a tensor above glibc's mmap threshold (at most
32 MiB) is mapped fresh on every allocation, and the kernel zero-fills it one 4 KiB page
fault at a time. For the LM-head logits of a step (``N x V``, e.g. 2048 x 32k bf16 =
128 MiB) that is ~32k faults per step, a few percent of a small model's step time.

``scratch(key, shape, dtype, device)`` hands out a view of a buffer kept per ``key``; the
buffer is busy while any tensor sharing its storage is alive (every view holds a
reference to the storage), so a caller that keeps its tensor (e.g. saved for backward),
or any view of it, is never handed the same memory twice: a request while the buffer is
busy gets a fresh tensor instead. Contents are uninitialised, like ``torch.empty``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import Tensor

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _busy(buffer: Tensor) -> bool:
    """True while a tensor other than ``buffer`` itself shares its storage."""
    if _use_count is None:  # cannot tell: never reuse (correct, just no saving)
        return True
    # References: ``buffer`` and the temporary storage object of this query; views add more.
    return int(_use_count(buffer.untyped_storage()._cdata)) > 2


_slots: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}  # flat, grows as needed
_lock = threading.Lock()


def scratch(key: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised ``shape`` tensor, reusing ``key``'s buffer when no view of it is alive.

    Args:
        key: names the use site (one buffer per key, dtype and device).
        shape: the tensor's shape.
    """
    if device.type != "cpu":  # CUDA & co. have a caching allocator of their own
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    numel = 1
    for size in shape:
        numel *= size
    with _lock:
        buffer = _slots.get((key, dtype, device))
        if buffer is not None and _busy(buffer):
            return torch.empty(tuple(shape), dtype=dtype, device=device)
        if buffer is None or buffer.numel() < numel:
            _slots.pop((key, dtype, device), None)  # free the old one before allocating anew
            buffer = _slots[(key, dtype, device)] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel].view(tuple(shape))


def release_scratch() -> None:
    """Drop every kept buffer (they are reallocated on next use)."""
    with _lock:
        _slots.clear()


__all__ = ["release_scratch", "scratch"]
