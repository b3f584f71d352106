"""LayerNorm and RMSNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from splice.interfaces import BuildContext
from splice.nn.configs import LayerNormConfig, RMSNormConfig


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last dim; computed in float32."""

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # Already float32: skip three no-op casts (they show up at decode, batch x 1 token).
            return nn.functional.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return nn.functional.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(
            x.dtype
        )


def build_layernorm(config: LayerNormConfig, ctx: BuildContext) -> nn.Module:
    return nn.LayerNorm(ctx.d_model, eps=config.eps, bias=config.bias)


def build_rmsnorm(config: RMSNormConfig, ctx: BuildContext) -> nn.Module:
    return RMSNorm(ctx.d_model, eps=config.eps)
