"""A quadratic pull toward anchor weights: the shared core of L2-SP and EWC.

``penalty = weight / 2 * sum_i w_i * (theta_i - theta0_i)^2`` where ``theta0`` is a
snapshot of the trainable parameters taken at ``setup`` and ``w`` a per-entry
importance (all ones for L2-SP, the diagonal Fisher for EWC).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from splice_forgetting._lm import trainable_parameters


class AnchoredQuadraticPenalty:
    """Base of regularizers that penalise squared distance from the starting weights.

    Subclasses call ``_snapshot(model)`` in ``setup`` and may set ``importance``.

    Attributes:
        weight: the coefficient in front of the penalty.
        anchors: ``{name: theta0}`` detached copies, float32, one per trainable parameter.
        importance: ``{name: w}`` with the anchors' shapes, or None for all ones.
    """

    name = "anchored"

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)
        self.anchors: dict[str, Tensor] = {}
        self.importance: dict[str, Tensor] | None = None

    def _snapshot(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = trainable_parameters(model)
        if not params:
            raise ValueError(f"{self.name}: the model has no trainable parameters at setup")
        # float32 copies: the anchor must not drift with a low-precision training dtype.
        self.anchors = {n: p.detach().float().clone() for n, p in params.items()}
        return params

    def _matched(self, model: nn.Module) -> list[tuple[str, Tensor, Tensor]]:
        if not self.anchors:
            raise RuntimeError(f"{self.name}: call setup(model, data) before penalty()")
        params = dict(trainable_parameters(model))
        missing = [n for n in self.anchors if n not in params]
        if missing:
            # A parameter frozen after setup has not moved since it was frozen: compare anyway.
            frozen = {n: p for n, p in model.named_parameters()}
            params.update({n: frozen[n] for n in missing if n in frozen})
            missing = [n for n in missing if n not in params]
        if missing:
            raise ValueError(
                f"{self.name}: parameters {missing[:5]} were trainable at setup but are not "
                "in the model now; call setup again after changing the model"
            )
        return [(n, params[n], self.anchors[n]) for n in self.anchors]

    def penalty(self, model: nn.Module, batch: Mapping[str, Any] | None = None) -> Tensor:
        """The weighted penalty, a float32 scalar with gradients to the model's parameters."""
        total: Tensor | None = None
        for name, param, anchor in self._matched(model):
            diff = param.float() - anchor.to(param.device)
            sq = diff.square()
            if self.importance is not None:
                sq = sq * self.importance[name].to(param.device)
            term = sq.sum()
            total = term if total is None else total + term
        assert total is not None  # _snapshot guarantees at least one anchor
        return 0.5 * self.weight * total

    def distance(self, model: nn.Module) -> float:
        """Unweighted ``||theta - theta0||_2`` (a diagnostic for reports)."""
        with torch.no_grad():
            sq = sum(
                float((p.float() - a.to(p.device)).square().sum())
                for _, p, a in self._matched(model)
            )
        return float(sq) ** 0.5
