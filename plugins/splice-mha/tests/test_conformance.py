"""splice-mha's token mixers through splice.testing's common conformance suites."""

from __future__ import annotations

from typing import ClassVar

import torch
from splice.interfaces import BuildContext
from splice.nn.positional import RotaryEmbedding
from splice.testing import CachedTokenMixerConformance, TokenMixerConformance
from splice.testing.checks import PositionMixing
from splice_mha.configs import CrossAttentionConfig, MHAConfig
from torch import nn


class TestMHA(CachedTokenMixerConformance):
    def make_config(self) -> MHAConfig:
        return MHAConfig(n_heads=4)


class TestGQAWithRoPEAndQKNorm(CachedTokenMixerConformance):
    # The context's RoPE module rotates head_dim = 4: other head counts change head_dim.
    config_fields_exempt = ("n_heads",)

    def make_config(self) -> MHAConfig:
        return MHAConfig(n_heads=4, n_kv_heads=2, qk_norm=True, qkv_bias=True)

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, rotary=RotaryEmbedding(4, 32))


class TestMQA(CachedTokenMixerConformance):
    def make_config(self) -> MHAConfig:
        return MHAConfig(n_heads=4, n_kv_heads=1, head_dim=6, bias=True)


class TestBidirectionalMHA(TokenMixerConformance):
    """Encoder self-attention: built with ``causal=False``."""

    def make_config(self) -> MHAConfig:
        return MHAConfig(n_heads=2)

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, causal=False)


class TestCrossAttention(TokenMixerConformance):
    position_mixing: ClassVar[PositionMixing | None] = "pointwise"  # mixes the context, not x

    def make_config(self) -> CrossAttentionConfig:
        return CrossAttentionConfig(n_heads=4, n_kv_heads=2)

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, d_context=10, causal=False)


class TestGatedCrossAttention(TokenMixerConformance):
    position_mixing: ClassVar[PositionMixing | None] = "pointwise"

    def make_config(self) -> CrossAttentionConfig:
        return CrossAttentionConfig(n_heads=2, gated=True)

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, d_context=16, causal=False)

    def prepare(self, module: nn.Module) -> None:
        # The gate starts at 0 (output 0); open it so every parameter and input is exercised.
        if module.gate is not None:  # the config-fields check also builds gated=False
            with torch.no_grad():
                module.gate.fill_(0.5)  # type: ignore[operator]
