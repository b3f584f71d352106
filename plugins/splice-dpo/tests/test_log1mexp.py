"""``log1mexp`` (ORPO's ``log(1 - exp(x))``): values and finite gradients on both branches,
including a confident model's average log-prob just below 0."""

from __future__ import annotations

import math

import pytest
import torch
from splice_dpo.configs import ORPOLossConfig
from splice_dpo.losses import PreferenceLogps, log1mexp, orpo_loss


def _analytic_grad(x: float) -> float:
    """``d/dx log(1 - e^x) = -e^x / (1 - e^x)``, in float64."""
    return -math.exp(x) / -math.expm1(x)


@pytest.mark.parametrize("x", [-2.9e-8, -1e-7, -1e-3, -0.5, -math.log(2), -0.7, -5.0, -40.0])
def test_value_and_gradient_match_the_analytic_ones_in_float32(x: float) -> None:
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    y = log1mexp(t)
    y.backward()
    assert t.grad is not None and torch.isfinite(t.grad)
    x32 = float(t.detach())  # x as float32 holds it
    assert float(y.detach()) == pytest.approx(math.log(-math.expm1(x32)), rel=1e-5)
    assert float(t.grad) == pytest.approx(_analytic_grad(x32), rel=1e-4)


def test_zero_and_above_stay_finite() -> None:
    t = torch.tensor([0.0, 1e-3, -1e-30], dtype=torch.float32, requires_grad=True)
    y = log1mexp(t)
    y.sum().backward()
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(t.grad).all())


def test_orpo_gradient_is_finite_for_a_confident_model() -> None:
    """Chosen average log-prob -2.9e-8 (one token, probability 1 - 2.9e-8): the loss and
    its gradient are finite and the gradient equals the analytic one."""
    chosen = torch.tensor([-2.9e-8], dtype=torch.float32, requires_grad=True)
    rejected = torch.tensor([-3.0], dtype=torch.float32, requires_grad=True)
    ones = torch.ones(1)
    logps = PreferenceLogps(chosen, rejected, ones, ones)
    out = orpo_loss(logps, ORPOLossConfig(beta=0.1))
    out.losses.sum().backward()
    assert chosen.grad is not None and bool(torch.isfinite(chosen.grad).all())
    # analytic: loss = -c - β log σ(z), z = c - r - log(1-e^c) + log(1-e^r)
    c, r, beta = float(chosen.detach()), float(rejected.detach()), 0.1
    z = c - r - math.log(-math.expm1(c)) + math.log(-math.expm1(r))
    dz_dc = 1.0 - _analytic_grad(c)
    expected = -1.0 - beta * (1.0 - 1.0 / (1.0 + math.exp(-z))) * dz_dc
    assert float(chosen.grad[0]) == pytest.approx(expected, rel=1e-4)
