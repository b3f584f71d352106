"""How many threads torch's CPU kernels use, for one block of code.

A run may pin ``train.num_threads`` (tiny models run best on one thread, where the threads'
synchronisation costs more than their arithmetic saves), and a measurement may run on one
thread; either gives the process its previous count back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch uses ``n`` intra-op threads inside the block (None: leave the count as it is)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["torch_threads"]
