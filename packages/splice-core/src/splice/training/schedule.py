"""Learning-rate schedules as pure functions of the step.

A schedule's whole state is the step number, so resuming needs no scheduler
object: the trainer sets each param group's ``lr = base_lr * lr_multiplier(step)``
(times the group's ``lr_scale``, see ``set_learning_rate``).
"""

from __future__ import annotations

import math
from typing import Any

from splice.training.configs import ScheduleConfig


def lr_multiplier(step: int, total_steps: int, schedule: ScheduleConfig) -> float:
    """The multiplier of the base learning rate for the update with 0-based index ``step``.

    Warmup ramps linearly ``1/w, 2/w, ..., 1`` over the first ``w = warmup_steps`` updates;
    afterwards ``constant`` stays at 1, ``linear`` and ``cosine`` decay to ``min_lr_ratio``
    at the last update.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    warmup = schedule.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if schedule.kind == "constant":
        return 1.0
    decay_steps = max(total_steps - warmup - 1, 1)
    progress = min((step - warmup) / decay_steps, 1.0)
    floor = schedule.min_lr_ratio
    if schedule.kind == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: Any, lr: float) -> None:
    """Set every param group's rate to ``lr`` times its ``lr_scale`` (default 1).

    Groups get an ``lr_scale`` from ``build_optimizer`` (LoRA+'s ``B``, PPO's value head);
    every training loop, offline or online, sets its rates through here so none drops them.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
