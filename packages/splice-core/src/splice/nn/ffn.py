"""Dense channel mixers: the GELU MLP of GPT-2 and the SwiGLU of Llama."""

from __future__ import annotations

from torch import Tensor, nn

from splice.interfaces import BuildContext, ChannelMixer
from splice.nn.configs import MLPConfig, SwiGLUConfig

_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}


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
        self.act = _ACTIVATIONS[activation]()
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(self.act(self.up(x))))


class SwiGLU(ChannelMixer):
    """``down(silu(gate(x)) * up(x))``; ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, d_model: int, hidden: int, *, bias: bool = False) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


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
