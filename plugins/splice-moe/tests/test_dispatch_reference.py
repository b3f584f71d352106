"""The sorted dispatch equals the plain per-expert-mask reference, forward and gradients."""

from __future__ import annotations

import pytest
import torch
from splice_moe.configs import MoEConfig
from splice_moe.dispatch import sort_by_expert
from splice_moe.experts import HAS_GROUPED_MM, grouped_mm_supported
from splice_moe.layer import MoELayer
from splice_moe.reference import reference_forward

D = 16
MODES = ["off", "on", "padded", "modules"] if HAS_GROUPED_MM else ["off", "padded", "modules"]


def _config(mode, **fields):
    """``mode``: grouped_mm off/on, the padded layout (one bmm), or per-expert ``nn.Linear``s."""
    if mode == "modules":
        return MoEConfig(expert_layout="modules", **fields)
    if mode == "padded":  # any padding allowed: these small batches always pad
        return MoEConfig(grouped_mm="auto", max_padding=1e6, **fields)
    return MoEConfig(grouped_mm=mode, **fields)


def _grads(layer, x, fn):
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out * g).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.clone(), grads


CASES = {
    "top1-softmax": dict(n_experts=4, top_k=1, normalize_top_k=False),
    "top2-shared": dict(n_experts=8, top_k=2, n_shared=1, expert_hidden=24),
    "top3-sigmoid-gelu": dict(n_experts=6, top_k=3, scoring="sigmoid", activation="gelu"),
    "fine-grained-top4": dict(n_experts=32, top_k=4, expert_hidden=8, n_shared=2),
    "dropping": dict(n_experts=4, top_k=2, capacity_factor=0.5, n_shared=1),
    "dropping-tight": dict(n_experts=8, top_k=2, capacity_factor=0.25, route_scale=2.5),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_sorted_dispatch_equals_per_expert_mask_reference(case, mode):
    torch.manual_seed(0)
    layer = MoELayer(_config(mode, **CASES[case]), D)
    with torch.no_grad():  # larger weights than init: differences would show
        for p in layer.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 11, D)
    out, gx, grads = _grads(layer, x, lambda x: layer(x).hidden)
    ref, gx_ref, grads_ref = _grads(layer, x, lambda x: reference_forward(layer, x))
    assert out.shape == (3, 11, D)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    assert grads.keys() == grads_ref.keys()
    assert "router.gate.weight" in grads  # the router learns through the routing weights
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-5, rtol=1e-5, msg=name)


def test_reference_runs_under_bf16_autocast_and_matches_the_layer():
    """The yardstick of bf16 benchmarks: experts in bf16, accumulation in float32."""
    torch.manual_seed(0)
    layer = MoELayer(_config("off", **CASES["top2-shared"]), D)
    x = torch.randn(3, 11, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = reference_forward(layer, x)
        out = layer(x).hidden
    assert ref.dtype == torch.float32  # the float32 accumulator
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_padded_layout_places_each_expert_in_its_block():
    top_idx = torch.tensor([[2, 0], [1, 2], [0, 1], [2, 1]])  # loads 2, 3, 3 -> blocks of 3
    d = sort_by_expert(top_idx, 3, max_padding=1.0)
    assert d.block == 3 and d.rows == 9
    # rows 0-2 expert 0 (tokens 0, 2, padding), 3-5 expert 1 (1, 2, 3), 6-8 expert 2 (0, 1, 3)
    assert d.origin.tolist() == [1, 4, 8, 2, 5, 7, 0, 3, 6]  # 8 = N * k marks padding
    assert d.slot.tolist() == [6, 0, 3, 7, 1, 4, 8, 5]
    assert d.source[d.slot].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # 9 rows > (1 + 0.1) * 8: too much padding, the compact layout is kept
    assert sort_by_expert(top_idx, 3, max_padding=0.1).block is None


def test_padded_layout_with_capacity_marks_dropped_assignments():
    top_idx = torch.zeros(6, 1, dtype=torch.long)  # all on expert 0, capacity 3 of 6
    d = sort_by_expert(top_idx, 2, capacity=3, max_padding=1.0)
    assert d.block == 3 and d.rows == 6
    assert d.slot.tolist() == [0, 1, 2, 6, 6, 6]  # 6 = R: dropped
    assert d.origin.tolist() == [0, 1, 2, 6, 6, 6]  # rows 3-5: expert 1's empty block


def test_capacity_drops_later_tokens_and_counts_them():
    # 6 tokens all routed to expert 0 (k=1, E=2): capacity ceil(1.0 * 6 / 2) = 3.
    top_idx = torch.zeros(6, 1, dtype=torch.long)
    d = sort_by_expert(top_idx, 2, capacity=3)
    assert d.token.tolist() == [0, 1, 2]  # the first three in token order are kept
    assert d.counts.tolist() == [3, 0] and d.routed.tolist() == [6, 0]
    assert int(d.dropped) == 3


def test_dropped_tokens_get_only_the_shared_expert():
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(n_experts=2, top_k=1, capacity_factor=0.5, n_shared=1), D)
    with torch.no_grad():
        layer.router.gate.weight.zero_()
        layer.router.gate.weight[0, 0] = 100.0  # every token with x[...,0] > 0 goes to expert 0
    x = torch.randn(1, 12, D)
    x[..., 0] = 1.0
    out = layer(x).hidden[0]  # capacity = ceil(0.5 * 12 / 2) = 3
    shared = layer.shared(x[0])
    assert not torch.allclose(out[:3], shared[:3])
    torch.testing.assert_close(out[3:], shared[3:])


def test_sort_is_one_contiguous_slice_per_expert():
    top_idx = torch.tensor([[2, 0], [1, 2], [0, 1], [2, 1]])
    d = sort_by_expert(top_idx, 3)
    experts = top_idx.reshape(-1)[d.assignment]
    assert experts.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert d.token.tolist() == [0, 2, 1, 2, 3, 0, 1, 3]
    assert d.counts.tolist() == [2, 3, 3]


def test_grouped_and_looped_experts_agree():
    if not HAS_GROUPED_MM:
        pytest.skip("this torch has no torch._grouped_mm; only the looped path exists")
    torch.manual_seed(0)
    a = MoELayer(MoEConfig(n_experts=8, top_k=2, grouped_mm="on"), D)
    b = MoELayer(MoEConfig(n_experts=8, top_k=2, grouped_mm="off"), D)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(a(x).hidden, b(x).hidden, atol=1e-6, rtol=1e-5)


def test_modules_layout_computes_what_the_batched_layout_does():
    torch.manual_seed(0)
    batched = MoELayer(MoEConfig(n_experts=4, top_k=2, n_shared=1), D)
    modules = MoELayer(MoEConfig(n_experts=4, top_k=2, n_shared=1, expert_layout="modules"), D)
    state = {k: v for k, v in batched.state_dict().items() if not k.startswith("experts.")}
    h = batched.experts.hidden
    for e in range(4):
        state[f"experts.experts.{e}.gate.weight"] = batched.experts.gate_up[e, :h]
        state[f"experts.experts.{e}.up.weight"] = batched.experts.gate_up[e, h:]
        state[f"experts.experts.{e}.down.weight"] = batched.experts.down[e]
    modules.load_state_dict(state)
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(modules(x).hidden, batched(x).hidden, atol=1e-6, rtol=1e-5)


# (d_model, expert width, dtype) whose rows are not 16-byte multiples: torch's grouped GEMM
# raises "strides should be multiple of 16 bytes" on them, so "auto" must take the loop.
MISALIGNED = [(64, 45, torch.float32), (64, 50, torch.float32), (60, 48, torch.bfloat16)]


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize(("d", "h", "dtype"), MISALIGNED, ids=str)
def test_widths_the_grouped_gemm_refuses_fall_back_and_equal_the_reference(d, h, dtype, activation):
    torch.manual_seed(0)
    cfg = MoEConfig(n_experts=4, top_k=2, expert_hidden=h, activation=activation)
    layer = MoELayer(cfg, d).to(dtype)
    x = torch.randn(2, 9, d, dtype=dtype)
    assert not layer.experts.use_grouped(x.view(-1, d))
    out, gx, grads = _grads(layer, x, lambda x: layer(x).hidden)
    ref, gx_ref, grads_ref = _grads(layer, x, lambda x: reference_forward(layer, x))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    torch.testing.assert_close(gx, gx_ref, atol=tol, rtol=tol)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, atol=tol, rtol=tol)


def test_grouped_gemm_eligibility_follows_the_16_byte_rule():
    if not HAS_GROUPED_MM:
        pytest.skip("this torch has no grouped GEMM op")
    x32, x16 = torch.zeros(2, 64), torch.zeros(2, 64, dtype=torch.bfloat16)
    assert grouped_mm_supported(x32, 64, 48) and grouped_mm_supported(x16, 64, 56)
    assert not grouped_mm_supported(x32, 64, 45) and not grouped_mm_supported(x32, 64, 50)
    assert not grouped_mm_supported(x16, 60, 48) and grouped_mm_supported(x32, 60, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the compute dtype decides
        assert not grouped_mm_supported(x32, 64, 52)
    assert grouped_mm_supported(x32, 64, 52)  # 52 * 4 bytes = 208 = 13 * 16
    # Forcing the grouped GEMM on such widths is a clear error, not torch's stride error.
    layer = MoELayer(MoEConfig(n_experts=4, expert_hidden=45, grouped_mm="on"), 64)
    with pytest.raises(ValueError, match=r"d_model=64 and expert width 45 .* torch.float32"):
        layer(torch.randn(1, 5, 64))
