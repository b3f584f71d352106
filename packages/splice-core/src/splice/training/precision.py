"""Pick the training precision that makes a run fastest on its device and model.

bf16 autocast pays off only where the hardware multiplies bf16 natively (CUDA devices with
bf16 support, CPUs with AVX512-BF16 or AMX) **and** the model's matmuls are wide enough for
the bf16 kernels to win back the casts autocast adds around every op. On an AVX2-only CPU
torch emulates bf16 matmuls (~30-100x slower than float32), so ``precision="auto"`` (the
default) picks float32 there, and an explicit ``"bf16"`` warns once with the measured
slowdown. On a native-bf16 device, ``auto`` picks bf16 only for models whose typical matmul
is at least :data:`AUTO_BF16_MIN_WIDTH` wide (see :func:`matmul_width`): narrower models run
slower in bf16 (``benchmarks/bench_precision.py`` measures the crossover; the figures are in
docs/benchmarks.md). The CPU decision is probed once per process and cached.

``SPLICE_AUTO_PRECISION=float32|bf16`` forces what ``auto`` resolves to, on every device and
for every model (an explicit ``precision`` in a config still wins). CI uses it to run the
precision-sensitive tests a second time in bf16 on machines that would pick float32.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from typing import Any, Literal

import torch

from splice.training.threads import torch_threads

Precision = Literal["auto", "float32", "bf16"]

#: Environment variable that forces what ``precision="auto"`` resolves to.
AUTO_PRECISION_ENV = "SPLICE_AUTO_PRECISION"

#: Narrowest typical matmul (:func:`matmul_width`) for which ``auto`` picks bf16 on a device
#: that multiplies bf16 natively. Below it, autocast's casts cost more than the bf16 kernels
#: save (CPU, AVX512-BF16: a dense SFT step at d=128 and an MoE step at d=64 run slower in bf16
#: than in float32; from d=256 bf16 wins). ``benchmarks/bench_precision.py`` measures it.
AUTO_BF16_MIN_WIDTH = 256

#: The same threshold for a model with batched expert weights (any 3-D parameter, an MoE):
#: its per-expert GEMMs run slower in bf16 than in float32 up to d=256 on CPU (2.0x at d=64,
#: 1.05x at d=256; 0.82x at d=512), so ``auto`` waits for twice the width there.
AUTO_BF16_MIN_WIDTH_EXPERTS = 512


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
    best = {}
    with torch_threads(1):
        for dtype in (torch.float32, torch.bfloat16):
            a = torch.randn(n, n).to(dtype)
            a @ a  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ a
                times.append(time.perf_counter() - t0)
            best[dtype] = min(times)
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)


def forced_auto_precision() -> Literal["float32", "bf16"] | None:
    """What ``SPLICE_AUTO_PRECISION`` forces ``auto`` to (None when unset).

    Raises:
        ValueError: the variable holds anything but ``float32`` or ``bf16``.
    """
    value = os.environ.get(AUTO_PRECISION_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("float32", "bf16"):
        raise ValueError(f"{AUTO_PRECISION_ENV}={value!r}: expected 'float32' or 'bf16' (or unset)")
    return value  # type: ignore[return-value]


def matmul_width(model: torch.nn.Module) -> int:
    """The typical matmul width of ``model``: the numel-weighted median of ``min(rows, cols)``
    over its weight matrices (the last two dims of every parameter with two or more,
    embedding tables left out: they are gathered, not multiplied).

    A dense block at ``d_model=d`` reads ~d; an MoE block with narrow experts reads the
    expert width, which is what its grouped GEMMs multiply. 0 for a model without matrices.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    sizes = sorted(
        (min(p.shape[-2:]), p.numel())
        for p in model.parameters()
        if p.dim() >= 2 and id(p) not in embeddings
    )
    total = sum(n for _, n in sizes)
    seen = 0
    for width, n in sizes:
        seen += n
        if 2 * seen >= total:
            return int(width)
    return 0


_warned: set[str] = set()


def auto_precision(
    device: torch.device | str, model: torch.nn.Module | None = None
) -> Literal["float32", "bf16"]:
    """What ``precision="auto"`` means for ``model`` on ``device``.

    ``SPLICE_AUTO_PRECISION`` if set; else bf16 where it is native and the model's typical
    matmul is at least :data:`AUTO_BF16_MIN_WIDTH` wide (:data:`AUTO_BF16_MIN_WIDTH_EXPERTS`
    for a model with batched expert weights; any width when no model is given); float32
    otherwise.
    """
    forced = forced_auto_precision()
    if forced is not None:
        return forced
    if not bf16_is_native(device):
        return "float32"
    if model is not None:
        experts = any(p.dim() >= 3 for p in model.parameters())
        floor = AUTO_BF16_MIN_WIDTH_EXPERTS if experts else AUTO_BF16_MIN_WIDTH
        if matmul_width(model) < floor:
            return "float32"
    return "bf16"


def resolve_precision(
    precision: Precision, device: torch.device | str, model: torch.nn.Module | None = None
) -> Literal["float32", "bf16"]:
    """The precision a run of ``model`` uses on ``device``.

    ``"auto"`` follows :func:`auto_precision`. An explicit ``"bf16"`` where bf16 is emulated
    is kept (the user asked for it) but warns once per device type, with the measured
    slowdown.
    """
    if precision == "auto":
        return auto_precision(device, model)
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


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``precision`` (resolved) is ``"bf16"``, else nothing:
    the weights stay as they are, matmuls run in bf16."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_dtype(device: torch.device | str, width: int | None = None) -> torch.dtype:
    """The compute dtype ``auto`` implies on ``device`` (bf16 or float32) for a matmul of
    ``min(rows, cols) = width`` (None: any width).

    Used where a component picks its own compute dtype, e.g. QLoRA's dequantized matmuls.
    Follows the same rule as :func:`auto_precision`, ``SPLICE_AUTO_PRECISION`` included.
    """
    forced = forced_auto_precision()
    if forced is not None:
        return torch.bfloat16 if forced == "bf16" else torch.float32
    if not bf16_is_native(device) or (width is not None and width < AUTO_BF16_MIN_WIDTH):
        return torch.float32
    return torch.bfloat16


__all__ = [
    "AUTO_BF16_MIN_WIDTH",
    "AUTO_BF16_MIN_WIDTH_EXPERTS",
    "AUTO_PRECISION_ENV",
    "Precision",
    "auto_precision",
    "autocast",
    "bf16_is_native",
    "bf16_slowdown",
    "compute_dtype",
    "cpu_has_native_bf16",
    "forced_auto_precision",
    "matmul_width",
    "resolve_precision",
]
