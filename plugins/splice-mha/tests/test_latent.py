"""Multi-head latent attention: the conformance suites, the cache it keeps, and parity with
transformers' DeepSeek-V3 attention (interleaved RoPE turned into rotate-half rows)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from splice.generation.kv_cache import KVCache
from splice.interfaces import AttentionInputs, BuildContext
from splice.nn.positional import RotaryEmbedding, interleaved_to_half
from splice.testing import CachedTokenMixerConformance
from splice_mha.configs import MLAConfig
from splice_mha.latent import MultiHeadLatentAttention

D = 24


class TestMLA(CachedTokenMixerConformance):
    # The context's RoPE module rotates 4 dims: no other rotary width builds here.
    config_fields_exempt = ("qk_rope_head_dim",)

    def make_config(self) -> MLAConfig:
        return MLAConfig(
            n_heads=3, kv_lora_rank=10, q_lora_rank=14, qk_nope_head_dim=6,
            qk_rope_head_dim=4, v_head_dim=5, bias=True,
        )  # fmt: skip

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=D, max_seq_len=32, rotary=RotaryEmbedding(4, 32))


class TestMLADirectQueriesNoRoPE(CachedTokenMixerConformance):
    def make_config(self) -> MLAConfig:
        return MLAConfig(
            n_heads=2, kv_lora_rank=6, qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=8
        )


def test_odd_rope_width_is_refused():
    with pytest.raises(ValidationError, match="qk_rope_head_dim=3 must be even"):
        MLAConfig(n_heads=2, kv_lora_rank=4, qk_nope_head_dim=4, qk_rope_head_dim=3, v_head_dim=4)


def test_cache_holds_the_latent_and_one_rotary_key():
    cfg = MLAConfig(
        n_heads=4, kv_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=6
    )
    mla = MultiHeadLatentAttention(D, rotary=RotaryEmbedding(4, 16), **_kwargs(cfg)).eval()
    cache = KVCache(1, 16)
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        mla(x, AttentionInputs(torch.arange(5).expand(2, 5), cache=cache.layers[0]))
    layer = cache.layers[0]
    assert layer.k.shape == (2, 1, 16, 10) and layer.v.shape == (2, 1, 16, 4)
    assert cache.nbytes == 2 * 16 * cfg.cache_width() * 4


def _kwargs(cfg: MLAConfig) -> dict:
    return cfg.model_dump(exclude={"type"})


transformers = pytest.importorskip(
    "transformers", reason="transformers (peers group) not installed"
)


@pytest.mark.parametrize("q_lora_rank", [None, 14])
def test_matches_transformers_deepseek_v3_attention(q_lora_rank):
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    hf_cfg = transformers.DeepseekV3Config(
        hidden_size=D, num_attention_heads=3, num_key_value_heads=3, kv_lora_rank=10,
        q_lora_rank=q_lora_rank, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=5,
        attention_bias=True, rope_interleave=True, rope_parameters={"rope_type": "default", "rope_theta": 300.0},
    )  # fmt: skip
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = ds.DeepseekV3Attention(hf_cfg, layer_idx=0).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():  # norms near 1, the rest large enough to show
            p.copy_(torch.randn(p.shape) * 0.3 + (1.0 if "layernorm" in name else 0.0))
    cfg = MLAConfig(
        n_heads=3, kv_lora_rank=10, q_lora_rank=q_lora_rank, qk_nope_head_dim=6,
        qk_rope_head_dim=4, v_head_dim=5, bias=True,
    )  # fmt: skip
    mla = MultiHeadLatentAttention(D, rotary=RotaryEmbedding(4, 32, theta=300.0), **_kwargs(cfg))
    state = {}
    for name, value in hf.state_dict().items():
        name = name.replace("kv_a_proj_with_mqa", "kv_a_proj").replace("layernorm", "norm")
        if name == "kv_a_proj.weight" or name == "kv_a_proj.bias":
            latent, rope = value.split([10, 4])
            value = torch.cat([latent, interleaved_to_half(rope, dim=0)])
        elif name in ("q_proj.weight", "q_b_proj.weight"):
            heads = value.view(3, 10, -1)  # (H, d_n + d_r, in)
            value = torch.cat([heads[:, :6], interleaved_to_half(heads[:, 6:], dim=1)], 1)
            value = value.reshape(30, -1)
        state[name] = value
    mla.load_state_dict(state)
    mla.eval()

    x = torch.randn(2, 7, D)
    pos = torch.arange(7).expand(2, 7)
    cos_sin = ds.DeepseekV3RotaryEmbedding(hf_cfg)(x, pos)
    causal = torch.full((7, 7), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        want, _ = hf(x, cos_sin, causal)
        got = mla(x, AttentionInputs(pos))
        cache = KVCache(1, 7)  # prefill 4, then one token at a time
        steps = [mla(x[:, :4], AttentionInputs(pos[:, :4], cache=cache.layers[0]))]
        cache.advance(4)
        for t in range(4, 7):
            steps.append(
                mla(
                    x[:, t : t + 1],
                    AttentionInputs(pos[:, t : t + 1], is_causal=False, cache=cache.layers[0]),
                )
            )
            cache.advance(1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1), want, atol=1e-5, rtol=1e-5)
