"""LayerNorm and RMSNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from splice.interfaces import BuildContext
from splice.nn.configs import LayerNormConfig, RMSNormConfig


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``x / sqrt(mean(x^2) + eps) * weight`` in ``x``'s dtype, with ``x_hat`` and ``rstd (..., 1)``.

    Computed in float32 (float64 for float64 input). Casts are skipped when they would be
    no-ops: at decode (batch x 1 token) each dispatched op shows in the step time.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x if x.dtype == dtype else x.to(dtype)  # (..., D)
    rstd = _rstd(xf, eps)
    x_hat = xf * rstd  # the normalised input
    y = x_hat * weight
    return (y if y.dtype == x.dtype else y.to(x.dtype)), x_hat, rstd


def _rstd(xf: Tensor, eps: float) -> Tensor:
    """``1 / sqrt(mean(x^2) + eps)`` as ``(..., 1)``; one read of ``x`` (no ``x^2`` tensor)."""
    sq = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_()
    rstd: Tensor = sq.div_(xf.shape[-1]).add_(eps).rsqrt_()
    return rstd


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward.

    Forward saves the normalised input ``x_hat`` (the same size as ``x``, which it then
    need not keep), so backward does not recompute it; with ``g_hat = grad * weight``:
    ``dx = rstd (g_hat - x_hat <g_hat, x_hat> / D)`` and ``dw = sum grad * x_hat``. Six passes
    over the activations in backward and three in forward, where autograd's chain of
    pow/mean/rsqrt/mul nodes takes about twelve and saves more tensors.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, weight: Tensor, eps: float
    ) -> Tensor:
        y, x_hat, rstd = _rms_norm(x, weight, eps)
        ctx.save_for_backward(x_hat, weight, rstd)
        ctx.x_dtype = x.dtype  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x_hat, weight, rstd = ctx.saved_tensors  # type: ignore[attr-defined]
        need_x, need_w = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        g = grad.to(x_hat.dtype)
        grad_w = None
        if need_w:
            grad_w = (g * x_hat).reshape(-1, x_hat.shape[-1]).sum(0).to(weight.dtype)  # (D,)
        grad_x = None
        if need_x:
            g_hat = g * weight  # d loss / d x_hat
            # d x_hat / d x = rstd (I - x_hat x_hat^T / D): subtract the radial component.
            radial = torch.linalg.vecdot(g_hat, x_hat).unsqueeze(-1).div_(x_hat.shape[-1])
            grad_x = torch.addcmul(g_hat, x_hat, radial, value=-1).mul_(rstd)
            grad_x = grad_x.to(ctx.x_dtype)  # type: ignore[attr-defined]
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
