"""Per-step module hooks: modules that keep state outside the optimizer.

A module may implement ``splice.interfaces.AfterOptimizerStep``
(``after_optimizer_step() -> dict[str, Tensor | float] | None``); the Trainer calls it on every such submodule right after each optimizer step. Uses: an
MoE router's auxiliary-loss-free bias updated from the step's observed expert load,
statistics accumulated over the step's micro-batches. Returned values become step
metrics, prefixed with the module's name (e.g. ``blocks.1.ffn.load_max_mean``); tensors
are kept as they are until the Trainer's next flush, so no host sync happens here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from splice.interfaces import AfterOptimizerStep

# type -> implements AfterOptimizerStep: a protocol isinstance check costs microseconds, and
# this runs over every submodule after every optimizer step.
_HOOKED: dict[type, bool] = {}


def has_after_optimizer_step(module: nn.Module) -> bool:
    """Whether ``module``'s class implements ``AfterOptimizerStep`` (cached per class)."""
    cls = type(module)
    known = _HOOKED.get(cls)
    if known is None:
        known = _HOOKED[cls] = issubclass(cls, AfterOptimizerStep)
    return known


def after_optimizer_step(model: nn.Module) -> dict[str, Any]:
    """Call ``after_optimizer_step()`` on each submodule that has it; the metrics they return."""
    metrics: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not has_after_optimizer_step(module):
            continue
        out = module.after_optimizer_step()
        for key, value in (out or {}).items():
            metrics[f"{name}.{key}" if name else key] = value
    return metrics
