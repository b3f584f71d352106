"""What the core knows about adapters, without importing any adapter plugin.

An adapter plugin (splice-lora, splice-qlora) replaces modules of a built model with
*adapter layers*: modules that hold a frozen base and a trainable delta. Every such
layer implements ``AdapterLayer`` (one method), so the core can switch all of them off
at once. That is how a LoRA policy serves as its own frozen reference model in DPO,
PPO and GRPO: ``with adapters_disabled(policy): ref_logits = policy(...)`` costs no
second copy of the weights.

Adapter layers wrap *linear-like* modules (``is_linear_like``), not only ``nn.Linear``, so
that LoRA can sit on a quantized base (splice-qlora's 4-bit linears). The contract:

* ``in_features`` and ``out_features`` (ints) and ``forward(x (..., in)) -> (..., out)``;
* optionally ``bias`` (a ``(out,)`` tensor or None), added inside ``forward``;
* for the operations that need the dense matrix (merging a delta in, DoRA's weight norm,
  PiSSA's SVD): a floating-point ``weight`` of shape ``(out, in)``, or a
  ``dequantize() -> Tensor (out, in)`` method (quantized bases). Merging *in place* needs a
  dense ``weight``; a quantized base can only be merged by replacing it with a dense linear.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


def is_linear_like(module: nn.Module) -> bool:
    """True for ``nn.Linear`` and any module that behaves like one (see the module docstring):
    integer ``in_features`` and ``out_features`` and a ``forward``."""
    return (
        isinstance(module, nn.Module)
        and isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
        and not isinstance(module, nn.Embedding)
    )


def dense_weight(module: nn.Module) -> Tensor:
    """The ``(out, in)`` weight of a linear-like module: ``dequantize()`` if it has one, else
    its floating-point ``weight``.

    Raises:
        TypeError: the module has neither (names its type).
    """
    dequantize = getattr(module, "dequantize", None)
    if callable(dequantize):
        w = dequantize()
        if isinstance(w, Tensor):
            return w
    w = getattr(module, "weight", None)
    if isinstance(w, Tensor) and w.is_floating_point():
        return w
    raise TypeError(
        f"{type(module).__name__} has no dense weight: a linear-like base needs a floating-point "
        "`weight` (out, in) or a `dequantize()` method returning one"
    )


@runtime_checkable
class AdapterLayer(Protocol):
    """A module whose adapter delta can be switched off (its output is then the base's).

    ``set_adapters_enabled(False)`` must make ``forward`` equal to the frozen base layer's
    forward; ``adapters_enabled`` reports the current state.
    """

    adapters_enabled: bool

    def set_adapters_enabled(self, enabled: bool) -> None: ...


def adapter_layers(model: nn.Module) -> list[AdapterLayer]:
    """Every ``AdapterLayer`` inside ``model`` (empty when no adapter is applied)."""
    return [m for m in model.modules() if isinstance(m, AdapterLayer)]


def has_adapters(model: nn.Module) -> bool:
    """True when ``model`` holds at least one adapter layer."""
    return any(isinstance(m, AdapterLayer) for m in model.modules())


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as its frozen base: every adapter layer off inside the block.

    Each layer's previous state is restored on exit (also after an exception), so
    nesting and layers that were already off behave.
    """
    layers = adapter_layers(model)
    before = [layer.adapters_enabled for layer in layers]
    try:
        for layer in layers:
            layer.set_adapters_enabled(False)
        yield model
    finally:
        for layer, was in zip(layers, before):
            layer.set_adapters_enabled(was)


__all__ = [
    "AdapterLayer",
    "adapter_layers",
    "adapters_disabled",
    "dense_weight",
    "has_adapters",
    "is_linear_like",
]
