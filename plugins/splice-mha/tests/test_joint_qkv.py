"""Q, K and V as one GEMM on weights concatenated per call (attention without RoPE, many
rows): the same outputs and gradients as three projections; adapters/hooks still run."""

from __future__ import annotations

import copy

import pytest
import splice_mha.attention as attention
import torch
from splice.interfaces import AttentionInputs
from splice_mha.attention import MultiHeadAttention


def _run(mha: MultiHeadAttention, x: torch.Tensor, causal: bool) -> torch.Tensor:
    b, t, _ = x.shape
    return mha(x, AttentionInputs(positions=torch.arange(t).expand(b, t), is_causal=causal))


@pytest.mark.parametrize(("causal", "kv_heads"), [(False, 4), (True, 4), (True, 2)])
def test_joint_projection_equals_three_with_gradients(monkeypatch, causal, kv_heads) -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, n_heads=4, n_kv_heads=kv_heads, head_dim=8, qkv_bias=True)
    ref = copy.deepcopy(mha)
    calls = []
    joint = type(mha._qkv).joint
    monkeypatch.setattr(
        type(mha._qkv), "joint", lambda self, o, x: calls.append(x.shape) or joint(self, o, x)
    )
    x = torch.randn(4, 20, 32, requires_grad=True)  # 80 rows >= MIN_JOINT_ROWS
    x_ref = x.detach().clone().requires_grad_()
    got = _run(mha, x, causal)
    assert calls == [(4, 20, 32)]  # the joint GEMM really ran
    monkeypatch.setattr(attention, "MIN_JOINT_ROWS", 10**9)
    want = _run(ref, x_ref, causal)
    assert len(calls) == 1  # ... and not for the reference
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(got)
    got.backward(g)
    want.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(mha.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_a_hooked_projection_is_called_as_a_module() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, n_heads=4, n_kv_heads=4, head_dim=8)
    seen = []
    mha.q_proj.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    _run(mha, torch.randn(4, 20, 32), False)
    assert seen == [(4, 20, 32)]


def test_few_rows_run_three_projections(monkeypatch) -> None:
    mha = MultiHeadAttention(32, n_heads=4, n_kv_heads=4, head_dim=8)
    monkeypatch.setattr(type(mha._qkv), "joint", lambda *a: pytest.fail("joint GEMM at decode"))
    assert _run(mha, torch.randn(2, 1, 32), True).shape == (2, 1, 32)
