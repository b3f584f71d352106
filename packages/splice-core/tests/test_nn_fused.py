"""FusedLinears: one matmul at inference, identical results, never stale."""

from __future__ import annotations

import copy

import torch
from splice.nn.fused import FusedLinears
from torch import nn


def _layers(bias: bool) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    return nn.Linear(16, 8, bias=bias), nn.Linear(16, 4, bias=bias), nn.Linear(16, 4, bias=False)


def test_fused_equals_separate_with_and_without_grad() -> None:
    for bias in (True, False):
        layers = _layers(bias)
        fused = FusedLinears(*layers)
        x = torch.randn(3, 5, 16)
        want = [m(x) for m in layers]
        with torch.no_grad():
            got = fused(x)
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
        # with grad on, it calls the modules themselves, so gradients flow to each weight
        out = fused(x)
        sum(o.sum() for o in out).backward()
        assert all(m.weight.grad is not None for m in layers)


def test_cache_follows_optimizer_steps_and_loads() -> None:
    layers = _layers(True)
    fused = FusedLinears(*layers)
    x = torch.randn(2, 16)
    with torch.no_grad():
        before = fused(x)[0].clone()
    opt = torch.optim.SGD([p for m in layers for p in m.parameters()], lr=0.5)
    sum(o.sum() for o in fused(x)).backward()
    opt.step()
    with torch.no_grad():
        after = fused(x)
    assert not torch.allclose(before, after[0])
    torch.testing.assert_close(after[0], layers[0](x).detach())
    layers[1].load_state_dict({k: torch.zeros_like(v) for k, v in layers[1].state_dict().items()})
    with torch.no_grad():
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
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], 2 * a(x))

    holder = nn.Module()
    holder.a, holder.b = _layers(False)[:2]
    holder.fused = FusedLinears(holder.a, holder.b)  # type: ignore[assignment]
    twin = copy.deepcopy(holder)
    with torch.no_grad():
        twin.a.weight.mul_(3)
        torch.testing.assert_close(twin.fused(x)[0], twin.a(x))
        torch.testing.assert_close(holder.fused(x)[0], holder.a(x))
