"""splice-mha against a plain, explicit implementation of the seed's formula.

``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`` per head, heads concatenated,
output projection. The reference loops over heads, masks with ``-inf`` by hand,
rotates RoPE pairs one frequency at a time, and runs in float64; the module runs
in float32 and must agree within 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
from splice.generation.kv_cache import KVCache
from splice.interfaces import AttentionInputs
from splice.nn.positional import RotaryEmbedding
from splice_mha.attention import CrossAttention, MultiHeadAttention
from torch import Tensor

TOL = 1e-5
B, T, D = 2, 7, 32


def explicit_rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotate each pair ``(x_i, x_{i+d/2})`` by ``pos * theta^(-2i/d)``. ``x (B, T, d)``."""
    d = x.shape[-1]
    out = x.clone()
    for i in range(d // 2):
        angle = positions.double() * theta ** (-2 * i / d)  # (B, T)
        a, b = x[..., i], x[..., i + d // 2]
        out[..., i] = a * angle.cos() - b * angle.sin()
        out[..., i + d // 2] = a * angle.sin() + b * angle.cos()
    return out


def explicit_rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def reference_attention(
    mod: MultiHeadAttention,
    x: Tensor,
    *,
    allowed: Tensor,
    context: Tensor | None = None,
    positions: Tensor | None = None,
    theta: float | None = None,
) -> Tensor:
    """``allowed (B, T, S)`` bool: query i may attend key j. Returns ``(B, T, D)`` in float64."""
    w = {k: v.detach().double() for k, v in mod.state_dict().items()}
    x = x.double()
    src = x if context is None else context.double()

    def proj(name: str, inp: Tensor) -> Tensor:
        y = inp @ w[f"{name}.weight"].T
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    q_all, k_all, v_all = proj("q_proj", x), proj("k_proj", src), proj("v_proj", src)
    d, group = mod.head_dim, mod.n_heads // mod.n_kv_heads
    heads = []
    for h in range(mod.n_heads):
        kv = h // group  # the K/V head this query head shares (GQA)
        q = q_all[..., h * d : (h + 1) * d]
        k = k_all[..., kv * d : (kv + 1) * d]
        v = v_all[..., kv * d : (kv + 1) * d]
        if mod.q_norm is not None:
            q = explicit_rms(q, w["q_norm.weight"], mod.q_norm.eps)
            k = explicit_rms(k, w["k_norm.weight"], mod.k_norm.eps)
        if theta is not None:
            assert positions is not None
            q, k = explicit_rope(q, positions, theta), explicit_rope(k, positions, theta)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, T, S)
        scores = scores.masked_fill(~allowed, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v)  # (B, T, d)
    return proj("o_proj", torch.cat(heads, dim=-1))


def make(seed: int = 0, **kw: object) -> MultiHeadAttention:
    torch.manual_seed(seed)
    args: dict[str, object] = dict(n_heads=4, n_kv_heads=4, head_dim=8)
    args.update(kw)
    return MultiHeadAttention(D, **args).eval()  # type: ignore[arg-type]


def inputs(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g), torch.arange(T).expand(B, T)


def causal(t: int = T, s: int = T) -> Tensor:
    return (torch.arange(s)[None, :] <= torch.arange(s - t, s)[:, None]).expand(B, t, s)


def max_diff(a: Tensor, b: Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize(
    "kw",
    [
        {},  # plain multi-head
        {"n_kv_heads": 2},  # grouped-query: 2 K/V heads for 4 query heads
        {"n_kv_heads": 1},  # multi-query
        {"qk_norm": True},
        {"qkv_bias": True, "bias": True},
    ],
    ids=["mha", "gqa-2-of-4", "mqa", "qk-norm", "biases"],
)
def test_causal_matches_reference(kw: dict[str, object]) -> None:
    mod = make(**kw)
    x, pos = inputs()
    got = mod(x, AttentionInputs(positions=pos, is_causal=True))
    assert max_diff(got, reference_attention(mod, x, allowed=causal())) <= TOL


def test_bidirectional_matches_reference() -> None:
    mod = make(n_kv_heads=2)
    x, pos = inputs()
    got = mod(x, AttentionInputs(positions=pos, is_causal=False))
    assert (
        max_diff(got, reference_attention(mod, x, allowed=torch.ones(B, T, T, dtype=torch.bool)))
        <= TOL
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_mask_matches_reference(side: str) -> None:
    mod = make(n_kv_heads=2)
    x, _ = inputs()
    real = torch.ones(B, T, dtype=torch.bool)
    if side == "right":
        real[1, 4:] = False  # row 1 has 4 real tokens then padding
    else:
        real[1, :3] = False  # row 1 is left-padded by 3 (batched generation prompts)
    pos = (real.long().cumsum(-1) - 1).clamp(min=0)
    allowed = causal() & real[:, None, :]
    # The module gets a (B, 1, T, S) mask; padded query rows are never read.
    got = mod(
        x,
        AttentionInputs(
            positions=pos,
            attn_mask=allowed[:, None] | ~real[:, None, :, None] & torch.eye(T, dtype=torch.bool),
            is_causal=False,
        ),
    )
    want = reference_attention(mod, x, allowed=allowed | ~real[:, :, None])
    assert max_diff(got[real], want[real]) <= TOL


def test_padding_changes_nothing_for_real_tokens() -> None:
    """Right padding: the real tokens' outputs equal those of the unpadded sequence."""
    mod = make(n_kv_heads=2)
    x, pos = inputs()
    real = torch.ones(B, T, dtype=torch.bool)
    real[:, 5:] = False
    mask = (causal() & real[:, None, :]) | torch.eye(T, dtype=torch.bool)
    padded = mod(x, AttentionInputs(positions=pos, attn_mask=mask[:, None], is_causal=False))
    short = mod(x[:, :5], AttentionInputs(positions=pos[:, :5], is_causal=True))
    assert max_diff(padded[:, :5], short) <= TOL


@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2, "qk_norm": True}], ids=["mha", "gqa-qknorm"])
def test_rope_matches_explicit_rotation(kw: dict[str, object]) -> None:
    theta = 500.0
    mod = make(rotary=RotaryEmbedding(8, 64, theta=theta), **kw)
    x, _ = inputs()
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [10, 11, 12, 13, 14, 15, 16]])  # an offset row
    got = mod(x, AttentionInputs(positions=pos, is_causal=True))
    want = reference_attention(mod, x, allowed=causal(), positions=pos, theta=theta)
    assert max_diff(got, want) <= TOL


def test_rope_scores_depend_only_on_relative_position() -> None:
    """Shifting every position by the same offset leaves RoPE attention unchanged."""
    mod = make(rotary=RotaryEmbedding(8, 64))
    x, pos = inputs()
    a = mod(x, AttentionInputs(positions=pos, is_causal=True))
    b = mod(x, AttentionInputs(positions=pos + 20, is_causal=True))
    assert max_diff(a, b) <= TOL
    assert max_diff(a, make()(x, AttentionInputs(positions=pos, is_causal=True))) > 1e-3


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_cross_attention_with_context_padding_matches_reference(kv_heads: int) -> None:
    torch.manual_seed(0)
    mod = CrossAttention(D, n_heads=4, n_kv_heads=kv_heads, head_dim=8, d_context=12).eval()
    x, pos = inputs()
    g = torch.Generator().manual_seed(5)
    context = torch.randn(B, 9, 12, generator=g)
    ctx_real = torch.ones(B, 9, dtype=torch.bool)
    ctx_real[0, 6:] = False
    allowed = ctx_real[:, None, :].expand(B, T, 9)
    got = mod(x, AttentionInputs(positions=pos, context=context, context_mask=allowed[:, None]))
    want = reference_attention(mod, x, allowed=allowed, context=context)
    assert max_diff(got, want) <= TOL
    # Padding really hides those context rows: changing them changes nothing.
    context2 = context.clone()
    context2[0, 6:] = 100.0
    got2 = mod(x, AttentionInputs(positions=pos, context=context2, context_mask=allowed[:, None]))
    assert torch.equal(got, got2)


def test_gated_cross_attention_starts_closed() -> None:
    torch.manual_seed(0)
    mod = CrossAttention(D, gated=True, n_heads=4, n_kv_heads=4, head_dim=8, d_context=D)
    x, pos = inputs()
    y = mod(x, AttentionInputs(positions=pos, context=torch.randn(B, 3, D)))
    assert torch.equal(y, torch.zeros_like(y))


def test_cross_attention_without_context_names_the_problem() -> None:
    mod = CrossAttention(D, n_heads=4, n_kv_heads=4, head_dim=8)
    with pytest.raises(ValueError, match="context"):
        mod(torch.randn(1, 2, D), AttentionInputs(positions=torch.zeros(1, 2, dtype=torch.long)))


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_kv_cache_incremental_decoding_equals_full_forward(kv_heads: int) -> None:
    mod = make(n_kv_heads=kv_heads, rotary=RotaryEmbedding(8, 64), qk_norm=True)
    x, pos = inputs()
    full = mod(x, AttentionInputs(positions=pos, is_causal=True))
    cache = KVCache(1, 16)
    outs = []
    for a, b in [(0, 3), (3, 5), (5, 6), (6, 7)]:  # a prefill, a 2-token chunk, single tokens
        step = AttentionInputs(positions=pos[:, a:b], is_causal=True, cache=cache.layers[0])
        outs.append(mod(x[:, a:b], step))
        cache.advance(b - a)
    assert max_diff(torch.cat(outs, dim=1), full) <= TOL
    assert (
        max_diff(full, reference_attention(mod, x, allowed=causal(), positions=pos, theta=1e4))
        <= TOL
    )


def test_causal_flag_with_a_cache_aligns_to_the_last_keys() -> None:
    """``is_causal`` with T < S means bottom-right alignment (query i is key S-T+i)."""
    mod = make()
    x, pos = inputs()
    full = mod(x, AttentionInputs(positions=pos, is_causal=True))
    cache = KVCache(1, T)
    mod(x[:, :4], AttentionInputs(positions=pos[:, :4], is_causal=True, cache=cache.layers[0]))
    cache.advance(4)
    tail = mod(
        x[:, 4:], AttentionInputs(positions=pos[:, 4:], is_causal=True, cache=cache.layers[0])
    )
    assert max_diff(tail, full[:, 4:]) <= TOL


def test_heads_must_divide() -> None:
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        MultiHeadAttention(D, n_heads=4, n_kv_heads=3, head_dim=8)
