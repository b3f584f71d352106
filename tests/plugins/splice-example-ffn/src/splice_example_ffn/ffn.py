"""The squared-ReLU MLP itself (imports torch; loaded only when a model uses ``relu2``)."""

from __future__ import annotations

import torch
from splice.interfaces import BuildContext, ChannelMixer
from torch import Tensor, nn

from splice_example_ffn.configs import ReLU2Config


class ReLU2MLP(ChannelMixer):
    """``(B, T, D) -> up (B, T, H) -> relu(.)^2 -> down (B, T, D)``."""

    def __init__(self, d_model: int, hidden: int, *, bias: bool = False) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(torch.relu(self.up(x)).square())


def build_relu2(config: ReLU2Config, ctx: BuildContext) -> ReLU2MLP:
    """The factory registered for ``relu2``: ``ctx.d_model`` is the residual width."""
    hidden = config.hidden_dim or int(config.multiple * ctx.d_model)
    return ReLU2MLP(ctx.d_model, hidden, bias=config.bias)
