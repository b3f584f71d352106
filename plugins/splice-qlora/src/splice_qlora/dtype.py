"""The compute dtype of a quantized matmul: bfloat16 only where the hardware runs it natively."""

from __future__ import annotations

import torch

_NAMED = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True when ``device`` computes in bfloat16 natively (not by emulation through fp32).

    CUDA: ``torch.cuda.is_bf16_supported()``. CPU: the oneDNN capability includes
    AVX512-BF16 or AMX (``torch.backends.cpu.get_cpu_capability()``); on plain AVX2 or
    AVX512, bf16 matmuls are converted to fp32 and run slower than fp32 itself.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cap = torch.backends.cpu.get_cpu_capability().upper()
        return "BF16" in cap or "AMX" in cap
    return False


def resolve_compute_dtype(name: str, device: torch.device | str = "cpu") -> torch.dtype:
    """``"auto"`` -> bfloat16 where native on ``device``, else float32; other names as named."""
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name not in _NAMED:
        raise ValueError(f"compute_dtype={name!r}: expected 'auto' or one of {sorted(_NAMED)}")
    return _NAMED[name]
