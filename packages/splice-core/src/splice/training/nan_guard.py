"""The NaN guard: which checkpoint is *known good*, and a stop message that tells the truth.

The loss of step ``k`` is computed on the weights left by step ``k - 1``. So checkpoint
``step-s`` is *good* (its weights load finite and give a finite loss) once the loss of
step ``s + 1`` has been seen finite; the trainer tracks ``finite_through``, the last step
whose loss was finite, and a checkpoint is good iff ``s < finite_through``. A checkpoint is
only written after checking its weights are finite; the newest good one is never pruned.

When step ``k``'s loss is non-finite, checkpoints from step ``k - 1`` on are set aside
(``step-N.nonfinite``: resume skips them) and the message names the newest good one.
Weights that are already non-finite when training starts (a damaged ``init_from`` or
checkpoint) are a different failure, reported as such, not as a learning-rate problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splice.checkpoint import CheckpointManager


class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the message names the step and last checkpoint."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The model's weights were already non-finite when training started (not a divergence)."""


def non_finite_tensors(model: nn.Module, limit: int = 5) -> list[str]:
    """Names of up to ``limit`` floating parameters/buffers holding a NaN or inf.

    One device sync for the whole model (a stacked ``all(isfinite)`` per tensor).
    """
    named = [
        (name, t)
        for name, t in (*model.named_parameters(), *model.named_buffers())
        if t.is_floating_point() and t.numel()
    ]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(_local(t)).all() for _, t in named]).tolist()
    return [name for (name, _), good in zip(named, ok) if not good][:limit]


def non_finite_weights(model: nn.Module, modules: Mapping[str, nn.Module]) -> list[str]:
    """Up to 5 names of non-finite parameters and buffers: ``model``'s, then those of the
    objective's own ``modules`` (as ``<module>.<param>``, e.g. a value head's)."""
    bad = non_finite_tensors(model)
    for name, module in modules.items():
        bad += [f"{name}.{n}" for n in non_finite_tensors(module)]
    return bad[:5]


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor (an FSDP2 ``DTensor`` checks its own shard)."""
    to_local = getattr(t, "to_local", None)
    return (to_local() if callable(to_local) else t).detach()


def step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def newest_good(mgr: CheckpointManager | None, finite_through: int) -> Path | None:
    """The newest checkpoint of ``mgr``'s run whose following step's loss was finite."""
    if mgr is None:
        return None
    good = [p for p in mgr.checkpoints() if step_of(p) < finite_through and _ours(mgr, p)]
    return good[-1] if good else None


def _ours(mgr: CheckpointManager, path: Path) -> bool:
    return mgr.run_id is None or mgr.run_of(path) == mgr.run_id


def set_aside_unverified(mgr: CheckpointManager | None, finite_through: int) -> list[Path]:
    """Rename this run's checkpoints at or after ``finite_through`` to ``step-N.nonfinite``."""
    if mgr is None:
        return []
    bad = [p for p in mgr.checkpoints() if step_of(p) >= finite_through and _ours(mgr, p)]
    return [mgr.set_aside(p, "nonfinite") for p in bad]


def divergence_message(what: str, step: int, good: Path | None, set_aside: list[Path]) -> str:
    """The stop message of a run whose finite weights produced a non-finite value."""
    where = (
        f"the last good checkpoint is {good} (its weights are finite and gave a finite loss)"
        if good is not None
        else "no good checkpoint was written yet"
    )
    aside = (
        f"; set aside {', '.join(p.name for p in set_aside)} (written after the last finite loss)"
        if set_aside
        else ""
    )
    return (
        f"non-finite {what} at step {step}: training diverged and stopped; {where}{aside}. "
        "Lower train.optimizer.lr, set train.max_grad_norm, or check the data."
    )


def check_start_weights(model: nn.Module, *, step: int, source: Any) -> None:
    """Raise ``NonFiniteWeightsError`` if the weights training starts from are not finite."""
    bad = non_finite_tensors(model)
    if bad:
        raise NonFiniteWeightsError(
            f"the weights are non-finite before step {step + 1} ({', '.join(bad)}), as loaded "
            f"from {source}: the starting weights are damaged, training did not diverge. "
            "Start from other weights (init_from) or an older checkpoint."
        )
