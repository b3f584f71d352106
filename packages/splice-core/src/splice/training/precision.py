"""Pick the training precision the device runs natively.

bf16 autocast pays off only where the hardware multiplies bf16 natively: CUDA devices
with bf16 support, and CPUs with AVX512-BF16 or AMX. On an AVX2-only CPU, torch emulates
bf16 matmuls and they run ~30-100x slower than float32, so ``precision="auto"`` (the
default) picks float32 there, and an explicit ``"bf16"`` warns once with the measured
slowdown. The CPU decision is probed once per process and cached.
"""

from __future__ import annotations

import functools
import time
import warnings
from typing import Literal

import torch

Precision = Literal["auto", "float32", "bf16"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    cpu = getattr(torch, "cpu", None)
    found = [getattr(cpu, name, None) for name in probes]
    if all(callable(f) for f in found):
        return any(bool(f()) for f in found)  # type: ignore[misc]
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether bf16 matmuls run natively on ``device`` (CUDA with bf16, or a bf16 CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return True  # other accelerators (mps, xpu): trust the user's explicit choice


@functools.cache
def bf16_slowdown(n: int = 256, repeats: int = 3) -> float:
    """Measured time ratio of an ``n x n`` bf16 matmul to a float32 one on this CPU.

    One thread and the best of ``repeats``: with several threads on a loaded machine the
    float32 kernel's thread synchronisation, not its arithmetic, dominates small matmuls.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = {}
        for dtype in (torch.float32, torch.bfloat16):
            a = torch.randn(n, n).to(dtype)
            a @ a  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ a
                times.append(time.perf_counter() - t0)
            best[dtype] = min(times)
    finally:
        torch.set_num_threads(threads)
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)


_warned: set[str] = set()


def resolve_precision(
    precision: Precision, device: torch.device | str
) -> Literal["float32", "bf16"]:
    """The precision a run uses on ``device``.

    ``"auto"`` is bf16 where it is native and float32 elsewhere. An explicit ``"bf16"``
    where bf16 is emulated is kept (the user asked for it) but warns once per device type,
    with the measured slowdown.
    """
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "float32"
    if precision == "bf16" and not bf16_is_native(device):
        kind = torch.device(device).type
        if kind not in _warned:
            _warned.add(kind)
            ratio = bf16_slowdown() if kind == "cpu" else float("nan")
            warnings.warn(
                f"precision='bf16' on a {kind} without native bf16 matmuls "
                f"(CPU capability {torch.backends.cpu.get_cpu_capability()}): a bf16 matmul "
                f"measured {ratio:.0f}x slower than float32 here. Use precision='auto' or "
                "'float32' unless you are testing bf16 numerics.",
                RuntimeWarning,
                stacklevel=2,
            )
    return "bf16" if precision == "bf16" else "float32"


def compute_dtype(device: torch.device | str) -> torch.dtype:
    """The low-precision compute dtype ``auto`` implies on ``device`` (bf16 or float32).

    Used where a component picks its own compute dtype, e.g. QLoRA's dequantized matmuls.
    """
    return torch.bfloat16 if bf16_is_native(device) else torch.float32


__all__ = [
    "Precision",
    "bf16_is_native",
    "bf16_slowdown",
    "compute_dtype",
    "cpu_has_native_bf16",
    "resolve_precision",
]
