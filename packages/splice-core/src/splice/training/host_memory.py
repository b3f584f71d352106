"""Keep freed host memory in the process, so a training step's tensors do not fault in anew.

On CPU, torch allocates tensors with the C library's ``malloc``. glibc gives memory back
to the kernel eagerly: the top of the heap is trimmed once more than ``M_TRIM_THRESHOLD``
of it is free, and blocks above the mmap threshold are unmapped on ``free``. A training
step frees and re-allocates the same activation sizes every step, so each step then maps
its tensors again, and every fresh 4 KiB page costs a page fault (the kernel zeroes it) on
first touch: 4,000-41,000 faults per step for the SFT benchmark's model on the 2-core VM
here, with 19-88 ms of system time (the count grows when other allocations run between
steps). The same reason makes PyTorch's CPU tuning guide recommend jemalloc or tcmalloc
through ``LD_PRELOAD``; this does the part that matters for a training loop with glibc's
own allocator, from inside the process:

* ``M_TRIM_THRESHOLD`` = 2 GiB - 1: the freed top of the heap stays mapped;
* ``M_TOP_PAD`` = 64 MiB: the heap grows in large steps;
* ``M_MMAP_THRESHOLD`` = 32 MiB, glibc's upper limit on 64-bit: blocks up to that size
  come from the heap (and are reused) instead of a fresh ``mmap`` each time; glibc's
  default starts at 128 KiB and only climbs there as mapped blocks are freed.

Larger blocks are still mapped per allocation; the step's few that size (the LM head's
logits and weight gradient) already reuse memory through ``splice.nn.scratch``.

The cost: the process keeps its peak heap until it exits instead of returning freed
memory to the system. That is what a training process wants (CUDA's caching allocator
does the same for device memory), and why it is a ``TrainConfig`` switch
(``retain_host_memory``, on by default for CPU runs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
_SETTINGS = ((_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20), (_M_MMAP_THRESHOLD, 32 << 20))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (the only one whose ``mallopt`` this knows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 -- a glibc-only symbol: AttributeError elsewhere
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def retain_freed_host_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory for reuse, for the rest of the process.

    Returns:
        True when every setting was applied; False where the C library is not glibc
        (macOS, Windows, musl) or refused a value, which leaves the allocator as it was
        for the settings it refused.
    """
    libc = _glibc()
    if libc is None:
        return False
    applied = [libc.mallopt(param, value) == 1 for param, value in _SETTINGS]  # try each
    return all(applied)


__all__ = ["retain_freed_host_memory"]
