"""RMSNorm's hand-written backward equals autograd's, and the no-grad path the same formula."""

from __future__ import annotations

import pytest
import torch
from splice.nn.norms import RMSNorm, _RMSNormFunction


def _reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)


def test_gradcheck_float64() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _RMSNormFunction.apply(a, b, 1e-6), (x, w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_autograd_of_the_formula(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 7, 64).to(dtype).requires_grad_()
    grad = torch.randn(4, 7, 64).to(dtype)
    y = norm(x)
    y.backward(grad)
    got = (y.detach(), x.grad, norm.weight.grad)

    x2 = x.detach().clone().requires_grad_()
    w2 = norm.weight.detach().clone().requires_grad_()
    y2 = _reference(x2, w2, 1e-5)
    y2.backward(grad)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    # the same formula; rstd comes from a vector norm here, so float rounding may differ
    fwd_tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else tol
    torch.testing.assert_close(got[0], y2.detach(), **fwd_tol)
    torch.testing.assert_close(got[1], x2.grad, **tol)
    torch.testing.assert_close(got[2], w2.grad, **tol)
    assert got[1] is not None and got[1].dtype == dtype


def test_no_grad_path_is_the_same_formula() -> None:
    torch.manual_seed(0)
    norm = RMSNorm(32)
    x = torch.randn(3, 32)
    with torch.no_grad():
        plain = norm(x)
    traced = norm(x.requires_grad_())
    torch.testing.assert_close(plain, traced.detach(), rtol=0, atol=0)
