"""What one training step returns, and what a step strategy may use of the trainer.

The ``Trainer`` is a loop: each step it calls its *step strategy* (supervised:
``splice.training.supervised.SupervisedStep``; online, for PPO and GRPO:
``splice.training.online.OnlineStep``), which runs the forward/backward passes and the
optimizer update and returns a ``StepRecord``. The trainer keeps the records as tensors
until its next flush (one host sync for many steps), then logs them.

A strategy sees the trainer only through ``StepHost``: its public attributes, so a new
algorithm is a new strategy, not a new branch in the trainer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import torch
from torch import Tensor, nn

from splice.training.configs import TrainConfig

if TYPE_CHECKING:
    from splice.training.parallel import SingleProcess

Batch = Mapping[str, Any]


@dataclass
class StepRecord:
    """One step's values, kept as tensors until the trainer's next flush.

    Attributes:
        step: the step number after this update (1 for the first).
        lr: the scheduled base learning rate of the step.
        loss: the step's objective loss (a 0-d tensor; regularizer terms excluded).
        tokens: tokens the step processed on this process (a tensor or an int).
        grad_norm: the gradient norm before clipping (None when not clipped).
        penalty: the regularizers' summed term (None without regularizers).
        metrics: the objective's and modules' metrics (tensors or floats).
        micro_batches: how many items the step took from the batch stream.
    """

    step: int
    lr: float
    loss: Tensor
    tokens: Tensor | int
    grad_norm: Tensor | None
    penalty: Tensor | None
    metrics: dict[str, Any] = field(default_factory=dict)
    micro_batches: int = 1


class StepHost(Protocol):
    """The parts of a trainer a step strategy uses (``splice.training.trainer.Trainer``)."""

    config: TrainConfig
    model: nn.Module  # what runs the forward (a DDP wrapper under data parallelism)
    policy: nn.Module  # the plain model (generation needs its methods)
    objective: Any  # as given to the trainer: its optional capabilities are checked on it
    loss_objective: Any  # what computes the loss: ``objective``, or a data-parallel wrapper
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    step: int
    micro_batches: int
    device: torch.device
    parallel: SingleProcess

    @property
    def regularizers(self) -> Sequence[Any]: ...

    @property
    def extra_modules(self) -> Mapping[str, nn.Module]:
        """The objective's own trainable modules (e.g. a value head), by name."""
        ...

    def to_device(self, batch: Batch) -> Mapping[str, Any]: ...

    def autocast(self) -> contextlib.AbstractContextManager[Any]: ...

    def guard_finite(self) -> None:
        """Flush the pending steps and stop (``NonFiniteLossError``) if a loss or the
        weights are non-finite: an online step calls it before sampling from the weights."""
        ...


@runtime_checkable
class StepStrategy(Protocol):
    """How one step trains: the supervised and online strategies implement this.

    ``setup_at_init`` runs in the trainer's constructor (before the optimizer is built, so
    modules it makes can join it); ``setup_at_start`` runs when ``fit`` starts, before a
    checkpoint is loaded (so references snapshot the *starting* weights).
    """

    def setup_at_init(self, host: StepHost, data: Any) -> None: ...

    def setup_at_start(self, host: StepHost, data: Any) -> None: ...

    def trainable_modules(self, objective: Any) -> dict[str, nn.Module]: ...

    def examples(self, micro_batches: int, config: TrainConfig) -> int: ...

    def checkpoint_extra(self, objective: Any) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
        """Tensors (``objective.safetensors``) and JSON state a resume needs."""
        ...

    def restore_extra(self, objective: Any, state: Mapping[str, Any], checkpoint: Path) -> None:
        """Load what ``checkpoint_extra`` saved."""
        ...

    def __call__(self, host: StepHost, batches: Iterator[Batch]) -> StepRecord: ...


def record_dict(
    record: StepRecord, loss: float, grad_norm: float | None, tokens: int
) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of ``record`` (its tensors already synced to floats)."""
    rec: dict[str, Any] = {
        "kind": "train",
        "step": record.step,
        "loss": loss,
        "lr": record.lr,
        "tokens": tokens,
    }
    if grad_norm is not None:
        rec["grad_norm"] = grad_norm
    if record.penalty is not None:
        rec["penalty"] = float(record.penalty)
    rec.update({k: float(v) for k, v in record.metrics.items()})
    return rec


def synced_records(
    records: Sequence[StepRecord], tokens: Sequence[Tensor | int]
) -> tuple[list[dict[str, Any]], tuple[str, int] | None]:
    """The ``metrics.jsonl`` lines of ``records`` (one host sync for all their losses) up to
    the first step whose loss or gradient norm is non-finite, and ``(what, step)`` of that
    step (None when every step is finite).

    Args:
        records: the steps of one flush, oldest first.
        tokens: each step's token count (over all processes).
    """
    losses = torch.stack([r.loss.float() for r in records]).tolist()
    norms = [float(r.grad_norm) if r.grad_norm is not None else None for r in records]
    lines: list[dict[str, Any]] = []
    for record, loss, norm, n in zip(records, losses, norms, tokens):
        if not math.isfinite(loss):
            return lines, (f"loss={loss}", record.step)
        if norm is not None and not math.isfinite(norm):
            return lines, (f"gradient norm={norm}", record.step)
        lines.append(record_dict(record, loss, norm, int(n)))
    return lines, None


def penalty_of(regularizers: Sequence[Any], model: nn.Module, batch: Batch) -> Tensor:
    """The summed ``penalty(model, batch)`` of every regularizer term."""
    return cast(Tensor, sum(r.penalty(model, batch) for r in regularizers))


__all__ = [
    "Batch",
    "StepHost",
    "StepRecord",
    "StepStrategy",
    "penalty_of",
    "record_dict",
    "synced_records",
]
