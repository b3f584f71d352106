"""Statistics over the masked positions of per-token tensors.

Every tensor here is laid out per completion token: ``(B, L)`` with a ``mask`` that is
True on a row's generated tokens; positions off the mask take no part.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is True (0 when there are none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, *, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over ``mask`` (Bessel-corrected when ``unbiased`` and n > 1)."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1.0)
    ss = (((x - mean) * m) ** 2).sum()
    denom = (n - 1.0).clamp(min=1.0) if unbiased else n.clamp(min=1.0)
    return ss / denom


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``mask``; 0 off the mask.

    With ``shift_mean=False`` only the scale changes (the mean is added back), which is
    how rewards are sometimes whitened without changing their sign.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over ``mask``: 1 is a perfect critic,
    0 no better than a constant, negative worse (NaN when the returns do not vary)."""
    var_r = masked_var(returns, mask)
    ev = 1.0 - masked_var(returns - values, mask) / var_r.clamp(min=1e-12)
    return torch.where(var_r > 0, ev, torch.full_like(ev, float("nan")))


__all__ = ["explained_variance", "masked_mean", "masked_var", "whiten"]
