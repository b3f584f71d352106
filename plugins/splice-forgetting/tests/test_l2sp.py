from __future__ import annotations

import pydantic
import pytest
import torch
from splice.registry import get_registry
from splice_forgetting.configs import L2SPConfig
from splice_forgetting.l2sp import L2SP


def test_zero_at_start_and_exact_after_a_move(make_model, make_batch, perturb) -> None:
    model = make_model()
    reg = L2SP(L2SPConfig(weight=0.3))
    reg.setup(model)
    assert reg.penalty(model, make_batch()).item() == 0.0
    deltas = perturb(model, 0.01)
    expected = 0.5 * 0.3 * sum(float(d.double().square().sum()) for d in deltas.values())
    assert reg.penalty(model, make_batch()).item() == pytest.approx(expected, rel=1e-5)


def test_grows_with_distance(make_model, make_batch, perturb) -> None:
    model = make_model()
    reg = L2SP(L2SPConfig(weight=1.0))
    reg.setup(model)
    values = []
    for _ in range(3):
        perturb(model, 0.01)
        values.append(reg.penalty(model, {}).item())
    assert 0.0 < values[0] < values[1] < values[2]


def test_gradient_is_weight_times_displacement(make_model, make_batch, perturb) -> None:
    model = make_model()
    reg = L2SP(L2SPConfig(weight=0.7))
    reg.setup(model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    perturb(model, 0.05)
    reg.penalty(model, {}).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, 0.7 * (p.detach() - start[name]), atol=1e-6), name


def test_only_parameters_trainable_at_setup_are_anchored(make_model, make_batch, perturb) -> None:
    model = make_model()
    model.embed.weight.requires_grad_(False)  # also the tied lm_head
    reg = L2SP(L2SPConfig(weight=1.0))
    reg.setup(model)
    assert "embed.weight" not in reg.anchors
    with torch.no_grad():
        model.embed.weight.add_(1.0)
    assert reg.penalty(model, {}).item() == 0.0


def test_penalty_before_setup_is_an_error(make_model, make_batch, perturb) -> None:
    with pytest.raises(RuntimeError, match="setup"):
        L2SP(L2SPConfig()).penalty(make_model(), {})


def test_negative_weight_is_rejected_by_the_config(make_model, make_batch, perturb) -> None:
    with pytest.raises(pydantic.ValidationError, match="weight"):
        L2SPConfig(weight=-1.0)


def test_built_through_the_registry(make_model, make_batch, perturb) -> None:
    reg = get_registry().build("regularizer", L2SPConfig(weight=0.5))
    assert isinstance(reg, L2SP) and reg.weight == 0.5
    assert {"l2sp", "ewc", "kl_reference"} <= set(get_registry().tags("regularizer"))
