"""Core's channel mixers, norms and blocks run through the shared conformance suites."""

from __future__ import annotations

from typing import ClassVar

import pytest
from splice.interfaces import BuildContext
from splice.nn.configs import (
    LayerNormConfig,
    MLPConfig,
    ParallelBlockConfig,
    PostNormBlockConfig,
    PreNormBlockConfig,
    RMSNormConfig,
    SwiGLUConfig,
)
from splice.nn.positional import RotaryEmbedding
from splice.testing import BlockConformance, ChannelMixerConformance, NormConformance
from splice.testing.checks import PositionMixing

# Blocks need a TokenMixer; the only ones are plugins, addressed by tag like any config would.
ATTENTION = {"type": "mha", "n_heads": 4, "n_kv_heads": 2}


class TestMLP(ChannelMixerConformance):
    def make_config(self) -> MLPConfig:
        return MLPConfig(multiple=2.0, activation="gelu_tanh")


class TestMLPNoBias(ChannelMixerConformance):
    config_fields_exempt = ("multiple",)  # hidden_dim is set, which overrides multiple

    def make_config(self) -> MLPConfig:
        return MLPConfig(hidden_dim=24, activation="relu", bias=False)


class TestSwiGLU(ChannelMixerConformance):
    def make_config(self) -> SwiGLUConfig:
        return SwiGLUConfig()


class TestLayerNorm(NormConformance):
    def make_config(self) -> LayerNormConfig:
        return LayerNormConfig()


class TestRMSNorm(NormConformance):
    def make_config(self) -> RMSNormConfig:
        return RMSNormConfig(eps=1e-5)


@pytest.mark.mha
class TestPreNormBlock(BlockConformance):
    def make_config(self) -> PreNormBlockConfig:
        return PreNormBlockConfig(
            token_mixer=ATTENTION, channel_mixer=SwiGLUConfig(), norm=RMSNormConfig()
        )

    def make_context(self) -> BuildContext:
        # RoPE inside the block's attention, as a model would wire it.
        return BuildContext(d_model=16, max_seq_len=32, rotary=RotaryEmbedding(4, 32))


@pytest.mark.mha
class TestPostNormBlock(BlockConformance):
    def make_config(self) -> PostNormBlockConfig:
        return PostNormBlockConfig(token_mixer=ATTENTION)


@pytest.mark.mha
class TestParallelBlock(BlockConformance):
    def make_config(self) -> ParallelBlockConfig:
        return ParallelBlockConfig(token_mixer=ATTENTION, channel_mixer=MLPConfig())


@pytest.mark.mha
class TestBidirectionalBlock(BlockConformance):
    """An encoder block: built with ``causal=False``, later tokens must reach earlier ones."""

    def make_config(self) -> PreNormBlockConfig:
        return PreNormBlockConfig(token_mixer=ATTENTION)

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, causal=False)


@pytest.mark.mha
class TestCrossAttentionBlock(BlockConformance):
    """A decoder block with cross-attention over a context of another width."""

    position_mixing: ClassVar[PositionMixing | None] = "causal"

    def make_config(self) -> PreNormBlockConfig:
        return PreNormBlockConfig(
            token_mixer=ATTENTION, cross_attention={"type": "cross_attention", "n_heads": 2}
        )

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, d_context=12)
