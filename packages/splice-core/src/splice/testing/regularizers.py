"""Conformance of a regularizer (kind ``regularizer``): ``RegularizerConformance``.

A regularizer factory returns an object with ``setup(model, data)`` (at the starting
weights: snapshot, Fisher estimate, reference copy) and ``penalty(model, batch) -> Tensor``
(a scalar added to the objective's loss). Subclass the suite and define ``make_config()``,
``make_model()`` (a fresh tiny model) and ``make_batch()`` (one training batch for it); it
checks, on real tensors, that

- the penalty is a finite scalar, zero (``<= zero_atol``) at the weights ``setup`` saw;
- away from them it is positive, and one gradient step on it lowers it (it pulls the
  model back; a penalty whose anchor aliases the live weights is always zero and fails).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from splice.testing.naming import NamedConformance


class RegularizerConformance(NamedConformance):
    """The checks of one registered regularizer; define ``make_config``, ``make_model``,
    ``make_batch``."""

    kind: ClassVar[str] = "regularizer"

    zero_atol = 1e-6
    move_scale = 0.05

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def make_model(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define make_model()")

    def make_batch(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define make_batch()")

    def _set_up(self) -> tuple[Any, nn.Module]:
        from splice.registry import get_registry

        model = self.make_model()
        reg = get_registry().build("regularizer", self.make_config(), None)
        reg.setup(model, [self.make_batch(), self.make_batch()])
        return reg, model

    def _penalty(self, reg: Any, model: nn.Module) -> Tensor:
        name = self.make_config().type
        value = reg.penalty(model, self.make_batch())
        assert isinstance(value, Tensor) and value.dim() == 0, (
            f"regularizer {name!r}: penalty must be a scalar tensor, got "
            f"{tuple(getattr(value, 'shape', ())) or type(value).__name__}"
        )
        assert torch.isfinite(value), f"regularizer {name!r}: non-finite penalty {value}"
        return value

    def _move(self, model: nn.Module) -> None:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(self.move_scale * torch.randn(p.shape, generator=g))

    def test_zero_at_the_starting_weights(self) -> None:
        reg, model = self._set_up()
        value = self._penalty(reg, model).item()
        assert abs(value) <= self.zero_atol, (
            f"regularizer {self.make_config().type!r}: penalty {value:.3g} at the weights "
            "setup() saw (expected 0)"
        )

    def test_pulls_the_model_back(self) -> None:
        reg, model = self._set_up()
        self._move(model)
        name = self.make_config().type
        before = self._penalty(reg, model)
        assert before.item() > self.zero_atol, (
            f"regularizer {name!r}: penalty {before.item():.3g} after the weights moved "
            "(does setup() copy the starting weights, or keep references to the live ones?)"
        )
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(before, params, allow_unused=True)
        with torch.no_grad():
            scale = 0.1 / max(
                float(sum((g * g).sum() for g in grads if g is not None)) ** 0.5, 1e-12
            )
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(scale * g)
        after = self._penalty(reg, model).item()
        assert after < before.item(), (
            f"regularizer {name!r}: a gradient step on the penalty raised it "
            f"({before.item():.4g} -> {after:.4g}): its gradient does not point back"
        )


__all__ = ["RegularizerConformance"]
