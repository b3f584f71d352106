"""splice.nn.sdpa: the explicit short-key training kernel against torch's SDPA."""

from __future__ import annotations

import pytest
import torch
from splice.nn.sdpa import (
    MAX_DECODE_QUERIES,
    MAX_EXPLICIT_KEYS,
    _ExplicitAttention,
    decode_attention,
    scaled_dot_product_attention,
)
from torch.nn import functional as F


def _qkv(
    b: int,
    h: int,
    h_kv: int,
    t: int,
    s: int,
    d: int,
    dtype: torch.dtype,
    seed: int = 0,
    token_major: bool = False,
) -> list[torch.Tensor]:
    """q ``(B, H, T, d)``, k/v ``(B, H_kv, S, d)``; ``token_major``: as head views of
    ``(B, T, n, d)`` tensors, the layout attention gets from its projections."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(b, h, t, d), (b, h_kv, s, d), (b, h_kv, s, d)]
    if token_major:
        return [
            torch.randn(n0, n2, n1, n3, generator=g, dtype=dtype).transpose(1, 2).requires_grad_()
            for n0, n1, n2, n3 in shapes
        ]
    return [torch.randn(*sh, generator=g, dtype=dtype).requires_grad_(True) for sh in shapes]


def _out_and_grads(fn, q, k, v, probe):  # type: ignore[no-untyped-def]
    out = fn(q, k, v)
    grads = torch.autograd.grad((out * probe).sum(), (q, k, v))
    return [out.detach(), *grads]


CASES = {
    "causal": dict(is_causal=True),
    "causal in row blocks": dict(is_causal=True),  # T >= 128: the upper tiles are skipped
    "causal, fewer queries": dict(is_causal=True),  # T < S: top-left aligned, as SDPA
    "no mask": dict(),
    "bool mask": dict(
        attn_mask=torch.rand(2, 1, 6, 9, generator=torch.Generator().manual_seed(1)) > 0.4
    ),
}


@pytest.mark.parametrize("token_major", [False, True], ids=["head-major", "token-major"])
@pytest.mark.parametrize("h_kv", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("case", list(CASES))
def test_explicit_kernel_matches_sdpa_in_float64(case: str, h_kv: int, token_major: bool) -> None:
    kw = CASES[case]
    mask = kw.get("attn_mask")
    t = {"bool mask": 6, "causal in row blocks": 131, "causal, fewer queries": 5}.get(case, 9)
    s = 9 if case != "causal in row blocks" else t  # row blocks need T == S
    q, k, v = _qkv(2, 4, h_kv, t, s, 8, torch.float64, token_major=token_major)
    probe = torch.randn(2, 4, t, 8, dtype=torch.float64)
    want = _out_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw),
        q, k, v, probe,
    )  # fmt: skip
    got = _out_and_grads(
        lambda q, k, v: _ExplicitAttention.apply(q, k, v, mask, kw.get("is_causal", False)),
        q, k, v, probe,
    )  # fmt: skip
    for name, w, g in zip(["out", "dq", "dk", "dv"], want, got, strict=True):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, msg=name)
    # each gradient comes back in its input's memory layout (no copy in the projections' backward)
    for x, grad in zip((q, k, v), got[1:], strict=True):
        assert grad.stride() == x.stride()


def test_a_row_that_sees_no_key_gives_zeros_like_sdpa() -> None:
    q, k, v = _qkv(1, 2, 2, 4, 4, 8, torch.float64)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 1, :] = False  # query 1 may attend to nothing
    probe = torch.randn(1, 2, 4, 8, dtype=torch.float64)
    want = _out_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), q, k, v, probe
    )
    got = _out_and_grads(
        lambda q, k, v: _ExplicitAttention.apply(q, k, v, mask, False), q, k, v, probe
    )
    assert torch.equal(got[0][:, :, 1], torch.zeros(1, 2, 8, dtype=torch.float64))
    for w, g in zip(want, got, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def _grad_fn_name(out: torch.Tensor) -> str:
    assert out.grad_fn is not None
    return type(out.grad_fn).__name__


def test_dispatch_takes_the_explicit_kernel_only_where_it_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = _qkv(1, 2, 2, 16, 16, 8, dtype)
        assert "Explicit" in _grad_fn_name(scaled_dot_product_attention(q, k, v, is_causal=True))
    with torch.no_grad():  # inference: torch's kernel (no probabilities to save)
        out = scaled_dot_product_attention(q, k, v, is_causal=True)
        assert out.shape == q.shape
    # float64, dropout, long keys and large probability tensors go to torch's kernel
    q32, k32, v32 = _qkv(1, 2, 2, 4, MAX_EXPLICIT_KEYS[torch.float32] + 1, 8, torch.float32)
    assert "Explicit" not in _grad_fn_name(scaled_dot_product_attention(q32, k32, v32))
    q64, k64, v64 = _qkv(1, 2, 2, 16, 16, 8, torch.float64)
    assert "Explicit" not in _grad_fn_name(scaled_dot_product_attention(q64, k64, v64))
    assert "Explicit" not in _grad_fn_name(scaled_dot_product_attention(q, k, v, dropout_p=0.1))
    ql, kl, vl = _qkv(1, 1, 1, 4, MAX_EXPLICIT_KEYS[torch.bfloat16] + 1, 8, torch.bfloat16)
    assert "Explicit" not in _grad_fn_name(scaled_dot_product_attention(ql, kl, vl))
    monkeypatch.setattr("splice.nn.sdpa.MAX_EXPLICIT_BYTES", 1 * 2 * 16 * 16 * 4 - 1)
    assert "Explicit" not in _grad_fn_name(scaled_dot_product_attention(q, k, v))


def test_bfloat16_error_is_close_to_the_flash_kernels() -> None:
    """Both kernels against a float64 reference, at d=64, T=S=128, with sizeable scores."""
    q, k, v = _qkv(2, 4, 4, 128, 128, 64, torch.float32, seed=3)
    with torch.no_grad():  # larger scores than randn's make the rounding of scores matter
        q.mul_(2.0)
    probe = torch.randn(2, 4, 128, 64)
    ref = _out_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        *[x.detach().double().requires_grad_(True) for x in (q, k, v)],
        probe.double(),
    )
    low = [x.detach().bfloat16().requires_grad_(True) for x in (q, k, v)]
    flash = _out_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        *low, probe.bfloat16(),
    )  # fmt: skip
    ours = _out_and_grads(
        lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True),
        *low, probe.bfloat16(),
    )  # fmt: skip
    for name, r, f, o in zip(["out", "dq", "dk", "dv"], ref, flash, ours, strict=True):
        err_flash = ((f.double() - r).norm() / r.norm()).item()
        err_ours = ((o.double() - r).norm() / r.norm()).item()
        assert err_ours < 2.5 * err_flash + 1e-3, (name, err_ours, err_flash)
        assert err_ours < 2e-2, (name, err_ours)


def test_bad_arguments_are_named() -> None:
    q, k, v = _qkv(1, 4, 2, 4, 4, 8, torch.bfloat16)
    with pytest.raises(ValueError, match="enable_gqa"):
        scaled_dot_product_attention(q, k, v)
    mask = torch.ones(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="attn_mask or is_causal"):
        scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True)


def test_compiles_without_graph_breaks() -> None:
    """torch.compile traces the kernel, forward and backward, into one graph (train.compile)."""
    q, k, v = _qkv(1, 2, 2, 130, 130, 8, torch.float32, token_major=True)

    def loss(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return scaled_dot_product_attention(
            q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True
        ).sum()

    explained = torch._dynamo.explain(loss)(q, k, v)
    assert explained.graph_break_count == 0, explained.break_reasons


def test_float32_bidirectional_attention_takes_torch_kernel() -> None:
    q, k, v = _qkv(2, 4, 4, 17, 17, 16, torch.float32)
    assert "Explicit" not in _grad_fn_name(scaled_dot_product_attention(q, k, v))
    assert "Explicit" in _grad_fn_name(scaled_dot_product_attention(q, k, v, is_causal=True))
    qb, kb, vb = (x.detach().bfloat16().requires_grad_() for x in (q, k, v))
    assert "Explicit" in _grad_fn_name(scaled_dot_product_attention(qb, kb, vb))


@pytest.mark.parametrize("h_kv", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("t", [1, 3])
def test_decode_kernel_matches_sdpa_in_float64_on_a_cache_view(h_kv: int, t: int) -> None:
    """Queries against keys/values cut from a longer cache buffer (strided between heads),
    with and without a padding mask, including a query row that sees no key (zeros)."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(3, 4, t, 8, generator=g, dtype=torch.float64)
    buffers = [torch.randn(3, h_kv, 40, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    k, v = (x.narrow(2, 0, 25) for x in buffers)  # (B, H_kv, 25, d), as KVCache.update returns
    mask = torch.rand(3, 1, t, 25, generator=g) > 0.3
    mask[1, ..., 0, :] = False  # batch row 1's first query may attend to nothing
    for m in (None, mask):
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True)
        if m is not None:
            want = want.nan_to_num(0.0)  # torch's CPU kernel gives NaN or 0; splice: 0
        got = decode_attention(q, k, v, m)
        assert got.shape == want.shape and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(decode_attention(q, k, v, mask)[1, :, 0], torch.zeros(4, 8, dtype=q.dtype))


def test_dispatch_takes_the_decode_kernel_only_in_bf16_inference() -> None:
    q, k, v = (x.detach() for x in _qkv(2, 4, 2, 1, 30, 16, torch.bfloat16))
    mask = torch.ones(2, 1, 1, 30, dtype=torch.bool)
    mask[0, ..., :5] = False
    with torch.no_grad():
        got = scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        assert torch.equal(got, decode_attention(q, k, v, mask))
        with pytest.raises(ValueError, match="enable_gqa"):
            scaled_dot_product_attention(q, k, v)
        # float32 keeps torch's kernel (level with the explicit one there): bit for bit
        q32, k32, v32 = (x.float() for x in (q, k, v))
        assert torch.equal(
            scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, enable_gqa=True),
            F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask, enable_gqa=True),
        )
        # prefill-sized query blocks and causal calls keep torch's kernel too
        qp, kp, vp = (
            x.detach() for x in _qkv(1, 2, 2, MAX_DECODE_QUERIES + 1, 20, 8, torch.bfloat16)
        )
        want = F.scaled_dot_product_attention(qp, kp, vp)
        assert torch.equal(scaled_dot_product_attention(qp, kp, vp), want)
        qc, kc, vc = (x.detach() for x in _qkv(1, 2, 2, 4, 4, 8, torch.bfloat16))
        want = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True)
        assert torch.equal(scaled_dot_product_attention(qc, kc, vc, is_causal=True), want)
    # with gradients recorded, inputs that need them never take it
    qg, kg, vg = _qkv(1, 2, 2, 1, 30, 8, torch.bfloat16)
    assert "Decode" not in _grad_fn_name(scaled_dot_product_attention(qg, kg, vg))


def test_bfloat16_decode_error_is_close_to_the_flash_kernels() -> None:
    """One query against 80 cached keys at d=64, GQA, against a float64 reference."""
    q, k, v = (x.detach() for x in _qkv(8, 8, 4, 1, 80, 64, torch.float64, seed=4))
    q = q * 2.0  # sizeable scores, so their rounding matters
    mask = torch.ones(8, 1, 1, 80, dtype=torch.bool)
    mask[:3, ..., :7] = False  # left padding
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    low = [x.bfloat16() for x in (q, k, v)]
    flash = F.scaled_dot_product_attention(*low, attn_mask=mask, enable_gqa=True)
    with torch.no_grad():
        ours = scaled_dot_product_attention(*low, attn_mask=mask, enable_gqa=True)
    err_flash = ((flash.double() - ref).norm() / ref.norm()).item()
    err_ours = ((ours.double() - ref).norm() / ref.norm()).item()
    assert err_ours < 2.5 * err_flash + 1e-3 and err_ours < 2e-2, (err_ours, err_flash)


def _packed_mask(t: int) -> torch.Tensor:
    """``(2, 1, t, t)`` causal mask of two documents per row (what packing builds)."""
    from splice.nn.masks import build_attention_mask

    doc_ids = (torch.arange(t) >= t // 3).long().expand(2, t)
    return build_attention_mask(t=t, s=t, causal=True, doc_ids=doc_ids)


def test_layers_sharing_a_bool_mask_save_one_float_copy_for_backward() -> None:
    """torch converts a bool mask to a float one inside each call and saves that copy for
    backward; the wrapper converts once per mask, so stacked layers save one (the memory of
    a long packed step) and the output and gradients stay torch's."""
    t = 200  # above MAX_EXPLICIT_KEYS in float32: torch's kernel
    mask = _packed_mask(t)
    q, k, v = _qkv(2, 2, 2, t, t, 8, torch.float32, seed=1)
    saved: list[torch.Tensor] = []

    def keep(x: torch.Tensor) -> torch.Tensor:
        saved.append(x)
        return x

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
        out = q
        for _ in range(3):  # three "layers", one mask
            out = scaled_dot_product_attention(out, k, v, attn_mask=mask)
    masks = {x.data_ptr() for x in saved if x.shape == (2, 1, t, t)}
    assert len(masks) == 1
    probe = torch.randn_like(out)

    def stacked(fn):  # type: ignore[no-untyped-def]
        return lambda q, k, v: fn(fn(fn(q, k, v), k, v), k, v)

    want = _out_and_grads(
        stacked(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
        q, k, v, probe,
    )  # fmt: skip
    got = _out_and_grads(
        stacked(lambda q, k, v: scaled_dot_product_attention(q, k, v, attn_mask=mask)),
        q, k, v, probe,
    )  # fmt: skip
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)


def test_additive_mask_is_made_once_per_mask_and_keeps_empty_rows_bool() -> None:
    from splice.nn.sdpa import additive_mask

    mask = _packed_mask(12)
    first = additive_mask(mask, torch.float32)
    assert first.dtype == torch.float32 and first.shape == mask.shape
    assert torch.equal(first == 0, mask) and torch.isinf(first[~mask]).all()
    assert additive_mask(mask, torch.float32) is first  # reused while the mask lives
    assert additive_mask(mask, torch.bfloat16).dtype == torch.bfloat16
    mask[0, 0, 5, 0] = not bool(mask[0, 0, 5, 0])  # changed in place: made again
    assert additive_mask(mask, torch.float32) is not first
    empty = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    empty[..., 1, :] = False  # a row that sees nothing: torch's bool handling gives zeros
    assert additive_mask(empty, torch.float32) is empty
    with torch.inference_mode():
        frozen = _packed_mask(12)
    assert additive_mask(frozen, torch.float32) is frozen  # no version counter to key on
