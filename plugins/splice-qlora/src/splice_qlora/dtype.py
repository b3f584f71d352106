"""The compute dtype of a quantized matmul: bfloat16 only where the hardware runs it natively."""

from __future__ import annotations

import torch
from splice.training.precision import compute_dtype

_NAMED = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_compute_dtype(
    name: str, device: torch.device | str = "cpu", width: int | None = None
) -> torch.dtype:
    """``"auto"`` -> bfloat16 where ``device`` multiplies bf16 natively (CUDA with bf16, a CPU
    with AVX512-BF16 or AMX) and the matmul's ``min(in, out) = width`` is wide enough to gain
    from it, else float32 (``splice.training.precision.compute_dtype``, which also honours
    ``SPLICE_AUTO_PRECISION``); other names as named.
    """
    if name == "auto":
        return compute_dtype(device, width)
    if name not in _NAMED:
        raise ValueError(f"compute_dtype={name!r}: expected 'auto' or one of {sorted(_NAMED)}")
    return _NAMED[name]
