"""``weighted_sum``: an objective made of other objectives, regularizers and the aux loss.

``loss = Σ_i w_i · v_i`` on one batch, where ``v_i`` is an objective's ``loss``, a
regularizer's ``penalty``, or the model's auxiliary loss (MoE balancing) captured from
the step's first forward with gradient (a forward hook: no extra pass). Every term's
unweighted value is logged as ``term/<name>``, and each objective's own metrics as
``<name>/<metric>``. ``setup`` takes every term's reference at the starting weights;
``prepare`` is passed on to the objectives that have one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from splice.interfaces import LossOutput
from splice.objectives.configs import WeightedSumConfig


class _AuxCapture:
    """Forward hook keeping the first ``aux_loss`` a model forward returns with grad enabled."""

    def __init__(self) -> None:
        self.value: Tensor | None = None

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        aux = getattr(output, "aux_loss", None)
        if self.value is None and aux is not None and torch.is_grad_enabled():
            self.value = aux


class WeightedSumObjective:
    """See the module docstring."""

    def __init__(self, config: WeightedSumConfig) -> None:
        from splice.registry import get_registry

        reg = get_registry()
        self.config = config
        self.terms: list[tuple[str, float, str, Any]] = []
        for t in config.terms:
            if t.objective is not None:
                self.terms.append(
                    (t.label, t.weight, "objective", reg.build("objective", t.objective))
                )
            elif t.regularizer is not None:
                self.terms.append(
                    (t.label, t.weight, "regularizer", reg.build("regularizer", t.regularizer))
                )
            else:
                self.terms.append((t.label, t.weight, "aux_loss", None))
        self.wants_aux = any(kind == "aux_loss" for _, _, kind, _ in self.terms)

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None:
        for _, _, _, part in self.terms:
            setup = getattr(part, "setup", None)
            if callable(setup):
                setup(model, data)

    def prepare(self, context: Any) -> None:
        for _, _, kind, part in self.terms:
            prepare = getattr(part, "prepare", None)
            if kind == "objective" and callable(prepare):
                prepare(context)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        capture = _AuxCapture()
        handle = model.register_forward_hook(capture) if self.wants_aux else None
        total: Tensor | None = None
        metrics: dict[str, float] = {}
        n_tokens = 0
        try:
            for name, weight, kind, part in self.terms:
                if kind == "objective":
                    out = part.loss(model, batch)
                    value = out.loss
                    metrics.update({f"{name}/{k}": v for k, v in out.metrics.items()})
                    n_tokens = n_tokens or out.n_tokens
                elif kind == "regularizer":
                    value = part.penalty(model, batch)
                else:
                    if capture.value is None:
                        raise ValueError(
                            "weighted_sum: an 'aux_loss' term needs a model that reports an "
                            "auxiliary loss (e.g. MoE) and an objective term before it that runs "
                            "the model"
                        )
                    value = capture.value
                metrics[f"term/{name}"] = float(value.detach())
                total = weight * value if total is None else total + weight * value
        finally:
            if handle is not None:
                handle.remove()
        assert total is not None
        metrics["loss"] = float(total.detach())
        return LossOutput(loss=total, metrics=metrics, n_tokens=n_tokens)


def build_weighted_sum(config: WeightedSumConfig, ctx: object = None) -> WeightedSumObjective:
    return WeightedSumObjective(config)


__all__ = ["WeightedSumObjective", "build_weighted_sum"]
