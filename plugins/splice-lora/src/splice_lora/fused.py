"""``base(x) + s * (x A^T) B^T`` as one autograd node, for a base that is a plain matmul.

Left to autograd, a LoRA linear is three nodes (the base's matmul, ``x A^T``, and an
``addmm`` that adds ``s * h B^T``), whose backward clones ``grad_out`` for the ``addmm``'s
``self`` input, scales ``grad_h`` and ``grad_B`` in separate passes and sums the two
``grad_x`` contributions (base and LoRA) in another pass. ``LoRALinearFunction`` does the
same arithmetic with the fewest kernels:

* forward: ``y = x W^T (+ bias)``; ``h = x A^T`` (N, r); ``y += s h B^T`` in place;
* backward: ``gB = grad_y B`` (N, r) once, shared by ``grad_A = s gB^T x`` and
  ``grad_x = grad_y W + s gB A`` (the LoRA part accumulated in place, no extra add);
  ``grad_B = s grad_y^T h``. The frozen base gets no weight gradient, and ``grad_x`` is
  skipped when nothing upstream needs it (the first layer, over a frozen embedding).

It saves ``x`` and ``h`` (the rank-r activations), as autograd would. A quantized base
(splice-qlora's ``Linear4bit``) opts in with ``dense_matmul_weight(dtype)``, which returns a
function dequantizing its ``(out, in)`` weight (or None when its forward is not a plain
matmul for inputs of that dtype);
the dequantized weight is *not* kept between forward and backward (QLoRA's memory
bound): backward dequantizes again, as bitsandbytes' own ``matmul_4bit`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_globals

WeightFn = Callable[[], Tensor]


class LoRALinearFunction(torch.autograd.Function):
    """``(x (..., in), A (r, in), B (out, r), W, bias) -> (..., out)``; W and bias frozen.

    ``weight`` is the dense ``(out, in)`` base weight, or None with ``weight_fn`` giving it
    (called in forward and again in backward, so nothing dense outlives the forward).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        a: Tensor,
        b: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        scaling: float,
        weight_fn: WeightFn | None,
    ) -> Tensor:
        w = weight if weight is not None else weight_fn()  # type: ignore[misc]
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        y = torch.mm(x2, w.t()) if bias is None else torch.addmm(bias, x2, w.t())  # (N, out)
        h = torch.mm(x2, a.t())  # (N, r)
        y.addmm_(h, b.t(), alpha=scaling)
        ctx.save_for_backward(x2, h, a, b, weight)
        ctx.scaling, ctx.weight_fn, ctx.x_shape = scaling, weight_fn, x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x2, h, a, b, weight = ctx.saved_tensors
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])  # (N, out)
        need_x, need_a, need_b = ctx.needs_input_grad[:3]
        gb = torch.mm(g, b) if (need_x or need_a) else None  # (N, r): dL/dh / s
        grad_a = torch.mm(gb.t(), x2).mul_(s) if need_a else None  # type: ignore[union-attr]
        grad_b = torch.mm(g.t(), h).mul_(s) if need_b else None  # (out, r)
        grad_x = None
        if need_x:
            w = weight if weight is not None else ctx.weight_fn()
            grad_x = torch.mm(g, w).addmm_(gb, a, alpha=s).view(ctx.x_shape)  # type: ignore[arg-type]
        return grad_x, grad_a, grad_b, None, None, None, None


def _hook_free(module: nn.Module) -> bool:
    """No forward (pre-)hooks on ``module`` or globally: skipping its ``__call__`` is safe."""
    return not (
        module._forward_hooks
        or module._forward_pre_hooks
        or _module_globals._global_forward_hooks
        or _module_globals._global_forward_pre_hooks
    )


def fusable(
    base: nn.Module, x: Tensor, a: Tensor, b: Tensor
) -> tuple[Tensor | None, WeightFn | None] | None:
    """``(dense weight, None)`` or ``(None, weight_fn)`` when ``base(x)`` is exactly
    ``F.linear(x, W, bias)`` with W and bias frozen and every dtype equal; else None.

    Autocast, a trainable base, a dtype cast inside the base, or hooks on it all take the
    unfused path (which handles them).
    """
    if torch.is_autocast_enabled(x.device.type) or not _hook_free(base):
        return None
    if not (x.dtype == a.dtype == b.dtype):
        return None
    bias = getattr(base, "bias", None)
    if bias is not None and (bias.requires_grad or bias.dtype != x.dtype):
        return None
    if type(base) is nn.Linear:
        w = base.weight
        return None if w.requires_grad or w.dtype != x.dtype else (w, None)
    weight_fn = getattr(base, "dense_matmul_weight", None)
    getter = weight_fn(x.dtype) if callable(weight_fn) else None
    return (None, getter) if getter is not None else None


__all__ = ["LoRALinearFunction", "fusable"]
