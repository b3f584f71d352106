"""splice-vision's connectors pass splice.testing's ConnectorConformance."""

from __future__ import annotations

from typing import Any, ClassVar

from splice.testing import ConnectorConformance
from splice.testing.checks import PositionMixing
from splice_vision.configs import LinearProjectorConfig, MLPProjectorConfig, QFormerConfig


class TestLinearProjector(ConnectorConformance):
    def make_config(self) -> Any:
        return LinearProjectorConfig()


class TestMLPProjector(ConnectorConformance):
    def make_config(self) -> Any:
        return MLPProjectorConfig(hidden_dim=24)


class TestQFormer(ConnectorConformance):
    # Every query reads every image feature: no output is tied to one input position.
    position_mixing: ClassVar[PositionMixing | None] = "bidirectional"

    def make_config(self) -> Any:
        return QFormerConfig(n_queries=4, d_model=16, n_layers=1, n_heads=2)
