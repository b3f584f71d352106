"""FusedLinears: one matmul inside fused_projections(), identical results, never stale."""

from __future__ import annotations

import copy

import torch
from splice.nn.fused import FusedLinears, fused_projections
from torch import nn


def _layers(bias: bool) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    return nn.Linear(16, 8, bias=bias), nn.Linear(16, 4, bias=bias), nn.Linear(16, 4, bias=False)


def test_fused_equals_separate_and_grads_flow_outside_the_scope() -> None:
    for bias in (True, False):
        layers = _layers(bias)
        fused = FusedLinears(*layers)
        x = torch.randn(3, 5, 16)
        want = [m(x) for m in layers]
        with torch.no_grad(), fused_projections():
            got = fused(x)
            assert fused._weight is not None  # really took the fused path
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
        out = fused(x)  # gradients on: the modules themselves run
        sum(o.sum() for o in out).backward()
        assert all(m.weight.grad is not None for m in layers)


def test_no_stale_weights_after_a_fused_adamw_step() -> None:
    # fused AdamW updates parameters without bumping their version counters: the cache
    # must not outlive the fused_projections() scope it was built in.
    layers = _layers(True)
    fused = FusedLinears(*layers)
    x = torch.randn(2, 16)
    with torch.no_grad(), fused_projections():
        before = fused(x)[0].clone()
    opt = torch.optim.AdamW([p for m in layers for p in m.parameters()], lr=0.5, fused=True)
    sum(o.sum() for o in fused(x)).backward()
    opt.step()
    with torch.no_grad(), fused_projections():
        after = fused(x)
    assert not torch.allclose(before, after[0])
    torch.testing.assert_close(after[0], layers[0](x).detach())
    with torch.no_grad():
        layers[1].weight.zero_()
        layers[1].bias.zero_()
        with fused_projections():
            assert torch.count_nonzero(fused(x)[1]) == 0


def test_wrapped_module_falls_back_and_deepcopy_rebinds() -> None:
    class Wrapped(nn.Module):  # stands in for an adapter around one projection
        def __init__(self, inner: nn.Linear) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2

    a, b, _ = _layers(False)
    fused = FusedLinears(Wrapped(a), b)
    x = torch.randn(2, 16)
    with torch.no_grad(), fused_projections():
        torch.testing.assert_close(fused(x)[0], 2 * a(x))

    holder = nn.Module()
    holder.a, holder.b = _layers(False)[:2]
    holder.fused = FusedLinears(holder.a, holder.b)  # type: ignore[assignment]
    twin = copy.deepcopy(holder)
    with torch.no_grad():
        twin.a.weight.mul_(3)
        with fused_projections():
            torch.testing.assert_close(twin.fused(x)[0], twin.a(x))
            torch.testing.assert_close(holder.fused(x)[0], holder.a(x))
