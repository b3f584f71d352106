"""FusedLinears: one matmul inside fused_projections(), identical results, never stale."""

from __future__ import annotations

import copy

import torch
from splice.nn.fused import FusedLinears, fused_projections
from torch import nn


class _Owner(nn.Module):
    """Three projections reading one input, like q/k/v."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(16, 8, bias=bias)
        self.b = nn.Linear(16, 4, bias=bias)
        self.c = nn.Linear(16, 4, bias=False)
        self.abc = FusedLinears("a", "b", "c")
        self.only_a = FusedLinears("a")

    def separate(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.a(x), self.b(x), self.c(x)]


def test_fused_equals_separate_and_grads_flow_outside_the_scope() -> None:
    for bias in (True, False):
        owner = _Owner(bias)
        x = torch.randn(3, 5, 16)
        want = owner.separate(x)
        with torch.no_grad(), fused_projections():
            got = owner.abc(owner, x)
            joined = owner.abc.fused(owner, x)
            single = owner.only_a.one(owner, x)
        assert joined is not None and joined.shape == (3, 5, 16)  # really took the fused path
        assert [g.shape for g in got] == [w.shape for w in want]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(joined, torch.cat(want, dim=-1), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(single, want[0], rtol=1e-6, atol=1e-6)
        assert owner.abc.fused(owner, x) is None  # outside the scope
        out = owner.abc(owner, x)  # gradients on: the modules themselves run
        sum(o.sum() for o in out).backward()
        assert all(m.weight.grad is not None for m in (owner.a, owner.b, owner.c))


def test_no_stale_weights_after_a_fused_adamw_step() -> None:
    # fused AdamW updates parameters without bumping their version counters: the cache
    # must not outlive the fused_projections() scope it was built in.
    owner = _Owner(True)
    x = torch.randn(2, 16)
    with torch.no_grad(), fused_projections():
        before = owner.abc(owner, x)[0].clone()
    opt = torch.optim.AdamW(owner.parameters(), lr=0.5, fused=True)
    sum(o.sum() for o in owner.abc(owner, x)).backward()
    opt.step()
    with torch.no_grad(), fused_projections():
        after = owner.abc(owner, x)
    assert not torch.allclose(before, after[0])
    torch.testing.assert_close(after[0], owner.a(x).detach())
    with torch.no_grad():
        owner.b.weight.zero_()
        owner.b.bias.zero_()
        with fused_projections():
            assert torch.count_nonzero(owner.abc(owner, x)[1]) == 0


def test_replaced_or_hooked_projection_is_the_one_that_runs() -> None:
    class Doubled(nn.Module):  # stands in for an adapter swapped in after construction
        def __init__(self, inner: nn.Linear) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2

    owner = _Owner(False)
    x = torch.randn(2, 16)
    plain_a = owner.a
    owner.a = Doubled(plain_a)
    with torch.no_grad(), fused_projections():
        assert owner.abc.fused(owner, x) is None  # a wrapped module is never fused
        torch.testing.assert_close(owner.abc(owner, x)[0], 2 * plain_a(x))
        torch.testing.assert_close(owner.only_a.one(owner, x), 2 * plain_a(x))
    torch.testing.assert_close(owner.abc(owner, x)[0], 2 * plain_a(x))

    hooked = _Owner(False)
    seen: list[int] = []
    hooked.c.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    with torch.no_grad(), fused_projections():
        hooked.abc(hooked, x)
    assert seen == [4]  # the hook ran: hooked modules skip the fast path


def test_deepcopy_rebinds_to_the_copys_modules() -> None:
    owner = _Owner(True)
    twin = copy.deepcopy(owner)
    x = torch.randn(2, 16)
    with torch.no_grad():
        twin.a.weight.mul_(3)
        with fused_projections():
            torch.testing.assert_close(twin.abc(twin, x)[0], twin.a(x))
            torch.testing.assert_close(owner.abc(owner, x)[0], owner.a(x))


def test_few_rows_linear_matches_f_linear_and_keeps_the_usual_layout() -> None:
    from splice.nn.fused import FEW_ROWS, few_rows_linear
    from torch.nn import functional as F

    torch.manual_seed(0)
    weight, bias = torch.randn(24, 16), torch.randn(24)
    for shape in [(1, 16), (8, 1, 16), (2, 3, 16), (FEW_ROWS, 16)]:
        x = torch.randn(*shape)
        for b in (None, bias):
            got = few_rows_linear(x, weight, b)
            assert got.shape == (*shape[:-1], 24) and got.is_contiguous()
            torch.testing.assert_close(got, F.linear(x, weight, b), rtol=1e-6, atol=1e-6)
    many = torch.randn(FEW_ROWS + 1, 16)  # prefill-sized: F.linear itself, bit for bit
    assert torch.equal(few_rows_linear(many, weight, bias), F.linear(many, weight, bias))
    with torch.enable_grad():  # differentiable too (not used so, but never silently wrong)
        w = weight.clone().requires_grad_()
        few_rows_linear(torch.randn(4, 16), w).sum().backward()
        assert w.grad is not None and w.grad.shape == w.shape


def test_few_rows_linear_leaves_bf16_to_f_linear() -> None:
    """bf16 decode matmuls are faster through F.linear (oneDNN): bit for bit F.linear."""
    from splice.nn.fused import few_rows_linear
    from torch.nn import functional as F

    torch.manual_seed(0)
    weight, bias = torch.randn(24, 16, dtype=torch.bfloat16), torch.randn(24, dtype=torch.bfloat16)
    x = torch.randn(8, 1, 16, dtype=torch.bfloat16)
    for b in (None, bias):
        assert torch.equal(few_rows_linear(x, weight, b), F.linear(x, weight, b))


def test_joint_equals_separate_with_gradients_and_skips_hooked_modules() -> None:
    owner, ref = _Owner(True), _Owner(True)
    x = torch.randn(3, 5, 16)
    joined = owner.abc.joint(owner, x)  # gradients on, no scope needed
    assert joined is not None
    want = torch.cat(ref.separate(x), dim=-1)
    torch.testing.assert_close(joined, want, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(want)
    joined.backward(g)
    want.backward(g)
    for name in ("a", "b", "c"):
        mine, theirs = getattr(owner, name), getattr(ref, name)
        torch.testing.assert_close(mine.weight.grad, theirs.weight.grad, rtol=1e-6, atol=1e-6)
    owner.b.register_forward_pre_hook(lambda m, i: None)
    assert owner.abc.joint(owner, x) is None  # a hooked module must run as a module
