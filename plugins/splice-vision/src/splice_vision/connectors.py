"""Connectors: encoder features ``(B, N, D_enc)`` -> LM-width visual tokens ``(B, N', D)``.

* ``LinearProjector`` (LLaVA): one linear map, ``N' = N``.
* ``MLPProjector`` (LLaVA-1.5): ``Linear -> GELU -> Linear``, ``N' = N``.
* ``QFormer`` (BLIP-2): ``n_queries`` learned queries run through core pre-norm blocks whose
  cross-attention reads the image features; ``N' = n_queries`` whatever ``N`` is.

Built by the registry with ``BuildContext(d_model=<LM width>, d_context=<encoder width>)``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from splice.interfaces import AttentionInputs, BuildContext, Connector
from torch import Tensor, nn

from splice_vision._build import build, layer_norm
from splice_vision.configs import LinearProjectorConfig, MLPProjectorConfig, QFormerConfig


class _ProjectorBase(Connector):
    d_in: int
    d_out: int

    def _check(self, features: Tensor) -> None:
        if features.shape[-1] != self.d_in:
            raise ValueError(
                f"connector expects features of width {self.d_in}, got {features.shape[-1]}"
            )

    def tokens_for(self, n_features: int) -> int:
        """Visual tokens produced from ``n_features`` encoder tokens."""
        return n_features


class LinearProjector(_ProjectorBase):
    """``(B, N, D_enc) -> (B, N, D)`` with one ``nn.Linear``."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, features: Tensor) -> Tensor:
        self._check(features)
        return self.proj(features)  # type: ignore[no-any-return]


class MLPProjector(_ProjectorBase):
    """``(B, N, D_enc) -> Linear -> GELU -> Linear -> (B, N, D)``."""

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.up = nn.Linear(d_in, hidden or d_out)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden or d_out, d_out)

    def forward(self, features: Tensor) -> Tensor:
        self._check(features)
        return self.down(self.act(self.up(features)))  # type: ignore[no-any-return]


class QFormer(_ProjectorBase):
    """``(B, N, D_enc) -> (B, n_queries, D)``: learned queries cross-attend to the features."""

    def __init__(self, config: QFormerConfig, d_in: int, d_out: int) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.n_queries = config.n_queries
        self.queries = nn.Parameter(torch.randn(config.n_queries, config.d_model) * 0.02)
        ctx = BuildContext(
            d_model=config.d_model,
            max_seq_len=config.n_queries,
            n_layers=config.n_layers,
            causal=False,
            d_context=d_in,
        )
        self.blocks = nn.ModuleList(
            build("block", config.block_config(), replace(ctx, layer_idx=i))
            for i in range(config.n_layers)
        )
        self.norm = layer_norm(config.d_model, 1e-6)
        self.proj = nn.Linear(config.d_model, d_out)

    def tokens_for(self, n_features: int) -> int:
        return self.n_queries

    def forward(self, features: Tensor) -> Tensor:
        self._check(features)
        b = features.shape[0]
        x = self.queries.expand(b, -1, -1).to(features.dtype)  # (B, Q, D_q)
        q = x.shape[1]
        inputs = AttentionInputs(
            positions=torch.arange(q, device=x.device).expand(b, q),
            is_causal=False,
            context=features,
        )
        for block in self.blocks:
            x = block(x, inputs)
        return self.proj(self.norm(x))  # type: ignore[no-any-return]


def _widths(ctx: BuildContext | None) -> tuple[int, int]:
    if ctx is None or ctx.d_context is None:
        raise ValueError(
            "a connector is built with BuildContext(d_model=<LM width>, d_context=<encoder width>)"
        )
    return ctx.d_context, ctx.d_model


def build_linear_projector(config: LinearProjectorConfig, ctx: BuildContext) -> Connector:
    return LinearProjector(*_widths(ctx))


def build_mlp_projector(config: MLPProjectorConfig, ctx: BuildContext) -> Connector:
    return MLPProjector(*_widths(ctx), hidden=config.hidden_dim)


def build_qformer(config: QFormerConfig, ctx: BuildContext) -> Connector:
    return QFormer(config, *_widths(ctx))


__all__ = [
    "LinearProjector",
    "MLPProjector",
    "QFormer",
    "build_linear_projector",
    "build_mlp_projector",
    "build_qformer",
]
