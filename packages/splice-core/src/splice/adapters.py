"""What the core knows about adapters, without importing any adapter plugin.

An adapter plugin (splice-lora, splice-qlora) replaces modules of a built model with
*adapter layers*: modules that hold a frozen base and a trainable delta. Every such
layer implements ``AdapterLayer`` (one method), so the core can switch all of them off
at once. That is how a LoRA policy serves as its own frozen reference model in DPO,
PPO and GRPO: ``with adapters_disabled(policy): ref_logits = policy(...)`` costs no
second copy of the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import nn


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


__all__ = ["AdapterLayer", "adapter_layers", "adapters_disabled", "has_adapters"]
