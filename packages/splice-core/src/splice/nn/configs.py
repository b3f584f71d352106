"""Configs of the built-in nn parts. Kept free of torch so plugin loading stays light."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from splice.config import ChannelMixerField, ComponentConfig, NormField, TokenMixerField


# norms --------------------------------------------------------------------
class LayerNormConfig(ComponentConfig):
    """LayerNorm over the last dim (mean-centred, learned scale and bias)."""

    type: Literal["layernorm"] = "layernorm"
    eps: PositiveFloat = 1e-5
    bias: bool = True


class RMSNormConfig(ComponentConfig):
    """RMSNorm: ``x / rms(x) * g`` (no centring, no bias), as in Llama."""

    type: Literal["rmsnorm"] = "rmsnorm"
    eps: PositiveFloat = 1e-6


# positions ------------------------------------------------------------------
class NoPositionalConfig(ComponentConfig):
    """No positional information (e.g. a bag-of-tokens ablation)."""

    type: Literal["none"] = "none"


class SinusoidalPositionalConfig(ComponentConfig):
    """Fixed sinusoidal encodings added to token embeddings (Vaswani et al., 2017)."""

    type: Literal["sinusoidal"] = "sinusoidal"
    base: PositiveFloat = 10000.0


class LearnedPositionalConfig(ComponentConfig):
    """A learned vector per absolute position, added to token embeddings (GPT-2)."""

    type: Literal["learned"] = "learned"


class RoPEConfig(ComponentConfig):
    """Rotary position embedding applied to queries and keys inside attention."""

    type: Literal["rope"] = "rope"
    theta: PositiveFloat = 10000.0


# channel mixers ---------------------------------------------------------------
class MLPConfig(ComponentConfig):
    """Two-layer MLP ``W2 act(W1 x)``; ``hidden = multiple * D`` unless ``hidden_dim`` is set."""

    type: Literal["mlp"] = "mlp"
    hidden_dim: PositiveInt | None = None
    multiple: PositiveFloat = 4.0
    activation: Literal["gelu", "gelu_tanh", "quick_gelu", "relu", "silu"] = "gelu"
    bias: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class SwiGLUConfig(ComponentConfig):
    """Gated FFN ``W2 (silu(W1 x) * W3 x)`` (Shazeer 2020; Llama)."""

    type: Literal["swiglu"] = "swiglu"
    hidden_dim: PositiveInt | None = None
    multiple: PositiveFloat = 8.0 / 3.0
    bias: bool = False


# blocks -----------------------------------------------------------------------
class _BlockConfigBase(ComponentConfig):
    token_mixer: TokenMixerField
    channel_mixer: ChannelMixerField = MLPConfig()
    norm: NormField = LayerNormConfig()
    cross_attention: TokenMixerField | None = None
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class PreNormBlockConfig(_BlockConfigBase):
    """``x + mix(norm(x))`` then ``x + ffn(norm(x))`` (GPT-2, Llama)."""

    type: Literal["pre_norm"] = "pre_norm"


class PostNormBlockConfig(_BlockConfigBase):
    """``norm(x + mix(x))`` then ``norm(x + ffn(x))`` (the original Transformer)."""

    type: Literal["post_norm"] = "post_norm"


class ParallelBlockConfig(_BlockConfigBase):
    """``x + mix(norm(x)) + ffn(norm(x))`` (GPT-J, PaLM)."""

    type: Literal["parallel"] = "parallel"
