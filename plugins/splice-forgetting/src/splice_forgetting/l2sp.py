"""L2-SP: an L2 penalty toward the starting point rather than toward zero.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks" (ICML 2018). Unlike weight decay, which shrinks weights to
zero and so erases what pre-training learned, L2-SP shrinks them to ``theta0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from splice_forgetting.anchor import AnchoredQuadraticPenalty
from splice_forgetting.configs import L2SPConfig


class L2SP(AnchoredQuadraticPenalty):
    """``penalty = weight / 2 * sum_i ||theta_i - theta0_i||^2`` over trainable parameters.

    ``setup`` snapshots ``theta0``; ``data`` is not used. The gradient of the penalty
    is ``weight * (theta - theta0)``.
    """

    name = "l2sp"

    def __init__(self, config: L2SPConfig) -> None:
        super().__init__(config.weight)
        self.config = config

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None:
        self._snapshot(model)


def build_l2sp(config: L2SPConfig, ctx: object = None) -> L2SP:
    return L2SP(config)
