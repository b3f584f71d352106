"""Dense channel mixers: the GELU MLP of GPT-2 and the SwiGLU of Llama."""

from __future__ import annotations

from torch import Tensor, nn

from splice.interfaces import BuildContext, ChannelMixer
from splice.nn.configs import MLPConfig, SwiGLUConfig
from splice.nn.dropout import dropout_or_identity
from splice.nn.fused import FusedLinears


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.SiLU()
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(
        f"unknown activation {name!r}; expected gelu, gelu_tanh, quick_gelu, relu or silu"
    )


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * (1.702 * x).sigmoid()


class MLP(ChannelMixer):
    """``(B, T, D) -> up (B, T, H) -> act -> down (B, T, D)``."""

    def __init__(
        self,
        d_model: int,
        hidden: int,
        *,
        activation: str = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.act = _activation(activation)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = dropout_or_identity(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.dropout(self.down(self.act(self.up(x))))
        return y


class SwiGLU(ChannelMixer):
    """``down(silu(gate(x)) * up(x))``; ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, d_model: int, hidden: int, *, bias: bool = False) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self._gate_up = FusedLinears("gate", "up")  # one matmul when decoding
        self._down = FusedLinears("down")

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self._gate_up(self, x)
        return self._down.one(self, nn.functional.silu(gate) * up)


def hidden_size(hidden_dim: int | None, multiple: float, d_model: int) -> int:
    """``hidden_dim`` if given, else ``multiple * d_model`` rounded up to a multiple of 8."""
    if hidden_dim is not None:
        return hidden_dim
    return max(8, -(-int(multiple * d_model) // 8) * 8)


def build_mlp(config: MLPConfig, ctx: BuildContext) -> ChannelMixer:
    hidden = hidden_size(config.hidden_dim, config.multiple, ctx.d_model)
    return MLP(
        ctx.d_model, hidden, activation=config.activation, bias=config.bias, dropout=config.dropout
    )


def build_swiglu(config: SwiGLUConfig, ctx: BuildContext) -> ChannelMixer:
    return SwiGLU(
        ctx.d_model, hidden_size(config.hidden_dim, config.multiple, ctx.d_model), bias=config.bias
    )
