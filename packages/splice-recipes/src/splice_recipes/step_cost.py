"""What one training step of a fine-tuning arm costs, measured so that arms can be compared
on a shared, loaded machine:

* ``step_flops``: the FLOPs of one forward and backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` over a real step (a multiply-add is 2; ops
  it has no formula for, such as a 4-bit matmul kernel, count nothing);
* ``median_step_ms``: the median wall time of many steps timed back to back in one
  process, the arms interleaved round by round, so that a change in the machine's load
  falls on every arm alike (a run's own ``ms_per_step`` under load swings by 2x).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def step_loss(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Next-token cross-entropy of ``model`` on ``input_ids (B, T)`` (every position)."""
    out = model(input_ids)
    logits = out.logits if hasattr(out, "logits") else out  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, input_ids: Tensor) -> None:
    """One optimizer step: forward, backward, ``optimizer.step()``, gradients cleared."""
    step_loss(model, input_ids).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_flops(model: nn.Module, input_ids: Tensor) -> int:
    """FLOPs of one forward + backward of ``model`` on ``input_ids (B, T)`` (the
    optimizer's elementwise update is not counted); gradients are cleared afterwards."""
    with FlopCounterMode(display=False) as counter:
        step_loss(model, input_ids).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def median_step_ms(
    steps: Mapping[str, tuple[nn.Module, torch.optim.Optimizer]],
    input_ids: Tensor,
    *,
    rounds: int,
    warmup: int = 3,
) -> dict[str, float]:
    """Per name, the median milliseconds of ``training_step`` over ``rounds`` rounds, each
    round one step of every model in turn (after ``warmup`` untimed steps each)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for model, opt in steps.values():
        for _ in range(warmup):
            training_step(model, opt, input_ids)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (model, opt) in steps.items():
            start = time.perf_counter()
            training_step(model, opt, input_ids)
            times[name].append(1000.0 * (time.perf_counter() - start))
    return {name: statistics.median(ts) for name, ts in times.items()}


__all__ = ["median_step_ms", "step_flops", "step_loss", "training_step"]
