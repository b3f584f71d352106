"""4-bit blockwise decoding in torch, for where bitsandbytes' CPU kernel is wrong.

bitsandbytes 0.50's CPU ``dequantize_4bit`` kernel (even ``in_features``) decodes rows
whose length is not a multiple of ``blocksize`` with the wrong block scales: a 200x96
weight at blocksize 64 comes back with twice the quantization error, at blocksize 256
eight times. The packed codes and the scales it stores are right, so splice decodes them
here instead; the result equals bitsandbytes' decode wherever that one is right.

Layout (``n = out * in`` weights, flattened row-major, in blocks of ``blocksize``):
byte ``j`` of ``packed`` holds weight ``2j`` in its high nibble and ``2j + 1`` in its
low one; weight ``i`` is ``code[nibble_i] * absmax[i // blocksize]``. With double
quantization ``absmax`` is uint8 codes: ``nested_code[absmax_j] * nested_absmax[j // 256]
+ offset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

NESTED_BLOCKSIZE = 256  # bitsandbytes' fixed block size for double quantization


def cpu_kernel_wrong(device: torch.device, in_features: int, blocksize: int) -> bool:
    """Whether bitsandbytes' CPU decode may be wrong for this layer (rows not whole blocks)."""
    return device.type == "cpu" and in_features % blocksize != 0


def decode_4bit(
    packed: Tensor,
    absmax: Tensor,
    code: Tensor,
    *,
    shape: tuple[int, int],
    blocksize: int,
    dtype: torch.dtype,
    nested_absmax: Tensor | None = None,
    nested_code: Tensor | None = None,
    offset: Tensor | None = None,
) -> Tensor:
    """Packed codes ``(n / 2, 1)`` uint8 + scales -> the ``shape`` weight in ``dtype``.

    Args:
        absmax: ``(ceil(n / blocksize),)`` float32 scales, or uint8 codes of them when
            ``nested_absmax``/``nested_code``/``offset`` are given (double quantization).
        code: the 16 levels of the data type (NF4 or FP4).
    """
    n = shape[0] * shape[1]
    b = packed.reshape(-1)
    nibbles = torch.stack([b >> 4, b & 15], dim=-1).reshape(-1)[:n].long()  # (n,)
    scales = absmax
    if nested_absmax is not None:
        assert nested_code is not None and offset is not None
        j = torch.arange(absmax.numel(), device=absmax.device) // NESTED_BLOCKSIZE
        scales = nested_code[absmax.long()] * nested_absmax[j] + offset
    scales = scales.float().repeat_interleave(blocksize)[:n]  # (n,) one scale per weight
    return (code.float()[nibbles] * scales).view(shape).to(dtype)


class DecodedLinear4bit(torch.autograd.Function):
    """``y = x W^T + bias`` with ``W = weight_fn()`` decoded in forward and again in backward.

    The dense weight is not kept between the two (QLoRA's memory bound), as bitsandbytes'
    ``matmul_4bit`` does; the weight and bias are frozen, so only ``x`` gets a gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, bias: Tensor | None, weight_fn: Callable[[], Tensor]
    ) -> Tensor:
        ctx.weight_fn = weight_fn
        return F.linear(x, weight_fn().to(x.dtype), bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_x = grad @ ctx.weight_fn().to(grad.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, None, None
