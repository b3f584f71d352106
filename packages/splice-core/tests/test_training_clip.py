"""clip_gradients: the fused-AdamW fold gives clip_grad_norm_'s update."""

from __future__ import annotations

import pytest
import torch
from splice.training.clip import clip_gradients
from torch import nn


def _model_with_grads(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    x = torch.randn(64, 16)
    (model(x).square().mean() * 50).backward()  # gradient norm well above 1
    return model


def _adamw(model: nn.Module, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)


@pytest.mark.parametrize("max_norm", [0.05, 1e6], ids=["clipping", "not clipping"])
def test_fused_fold_matches_clip_grad_norm(max_norm: float) -> None:
    folded, reference = _model_with_grads(), _model_with_grads()
    opt_f, opt_r = _adamw(folded, fused=True), _adamw(reference, fused=True)
    norm_f = clip_gradients(list(folded.parameters()), max_norm, opt_f)
    assert hasattr(opt_f, "grad_scale")  # the scale went to the optimizer ...
    assert all(
        torch.equal(a.grad, b.grad)  # ... and the gradients were not touched here
        for a, b in zip(folded.parameters(), reference.parameters(), strict=True)
        if a.grad is not None and b.grad is not None
    )
    norm_r = torch.nn.utils.clip_grad_norm_(list(reference.parameters()), max_norm)
    torch.testing.assert_close(norm_f, norm_r)
    assert norm_r.item() > 1.0
    opt_f.step()
    opt_r.step()
    for a, b in zip(folded.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_unfused_optimizer_is_clipped_in_place() -> None:
    model = _model_with_grads()
    opt = _adamw(model, fused=False)
    norm = clip_gradients(list(model.parameters()), 0.05, opt)
    assert norm.item() > 0.05
    assert not hasattr(opt, "grad_scale")
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    torch.testing.assert_close(clipped, torch.tensor(0.05), rtol=1e-4, atol=0)


@pytest.mark.parametrize("fused", [True, False], ids=["fused fold", "in place"])
@pytest.mark.parametrize("max_norm", [0.05, None], ids=["clipping", "no clipping"])
def test_divisor_turns_summed_gradients_into_the_mean(fused: bool, max_norm: float | None) -> None:
    """Gradients summed over 3 micro-batches, divided by 3, update like their mean."""
    summed, reference = _model_with_grads(), _model_with_grads()
    for p in summed.parameters():
        assert p.grad is not None
        p.grad.mul_(3.0)
    opt_s, opt_r = _adamw(summed, fused=fused), _adamw(reference, fused=fused)
    norm_s = clip_gradients(list(summed.parameters()), max_norm, opt_s, divisor=3.0)
    norm_r = clip_gradients(list(reference.parameters()), max_norm, opt_r)
    if max_norm is None:
        assert norm_s is None and norm_r is None
    else:
        assert norm_s is not None and norm_r is not None
        torch.testing.assert_close(norm_s, norm_r)  # the mean's norm is what gets logged
    opt_s.step()
    opt_r.step()
    for a, b in zip(summed.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_sgd_update_is_divided() -> None:
    """SGD's step is proportional to the gradient: a missing division would show 3x."""
    summed, reference = _model_with_grads(), _model_with_grads()
    for p in summed.parameters():
        assert p.grad is not None
        p.grad.mul_(3.0)
    opt_s = torch.optim.SGD(summed.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(reference.parameters(), lr=0.1)
    assert clip_gradients(list(summed.parameters()), None, opt_s, divisor=3.0) is None
    opt_s.step()
    opt_r.step()
    for a, b in zip(summed.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
