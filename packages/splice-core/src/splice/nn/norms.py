"""LayerNorm and RMSNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from splice.interfaces import BuildContext
from splice.nn.configs import LayerNormConfig, RMSNormConfig


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(x / sqrt(mean(x^2) + eps) * weight`` in ``x``'s dtype, ``rstd (..., 1)``).

    Computed in float32 (float64 for float64 input). Casts are skipped when they would be
    no-ops: at decode (batch x 1 token) each dispatched op shows in the step time.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x if x.dtype == dtype else x.to(dtype)  # (..., D)
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    y = xf * rstd * weight
    return (y if y.dtype == x.dtype else y.to(x.dtype)), rstd


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward: 8 passes over ``x`` where autograd's chain of
    pow/mean/rsqrt/mul nodes takes about 12 (and saves more tensors for them)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, weight: Tensor, eps: float
    ) -> Tensor:
        y, rstd = _rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors  # type: ignore[attr-defined]
        need_x, need_w = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        g = grad.to(rstd.dtype)
        x_hat = x.to(rstd.dtype) * rstd  # the normalised input, (..., D)
        grad_w = None
        if need_w:
            grad_w = (g * x_hat).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)  # (D,)
        grad_x = None
        if need_x:
            g_hat = g * weight  # d loss / d x_hat
            # d x_hat / d x = rstd (I - x_hat x_hat^T / D): subtract the radial component.
            radial = (g_hat * x_hat).mean(-1, keepdim=True)  # (..., 1)
            grad_x = torch.addcmul(g_hat, x_hat, radial, value=-1).mul_(rstd).to(x.dtype)
        return grad_x, grad_w, None


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dim; computed in float32 (or 64)."""

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            y: Tensor = _RMSNormFunction.apply(x, self.weight, self.eps)
            return y
        # Written out rather than F.rms_norm: torch's CPU rms_norm is a composite that copies
        # its input to float32 even when it already is (about 2x slower at decode).
        return _rms_norm(x, self.weight, self.eps)[0]


def build_layernorm(config: LayerNormConfig, ctx: BuildContext) -> nn.Module:
    return nn.LayerNorm(ctx.d_model, eps=config.eps, bias=config.bias)


def build_rmsnorm(config: RMSNormConfig, ctx: BuildContext) -> nn.Module:
    return RMSNorm(ctx.d_model, eps=config.eps)
