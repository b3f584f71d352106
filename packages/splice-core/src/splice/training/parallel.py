"""How a run spreads over processes: the strategy the ``Trainer`` is given.

``SingleProcess`` (the default) is one process that owns the whole model and writes
everything. ``splice.training.distributed.DataParallel`` (DDP or FSDP2 under torchrun)
implements the same methods with collectives; the Trainer's loop is the same for both.
Every method here is the identity, or the one-process way of doing the thing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from splice.checkpoint import CheckpointManager, CorruptCheckpointError
from splice.training.stream import BatchSource

# write(model, optimizer) -> the checkpoint folder; the Trainer supplies it (state, config, ...)
CheckpointWriter = Callable[[nn.Module, "torch.optim.Optimizer | None"], Path]


class SingleProcess:
    """One process trains the whole model on the whole batch, and writes every artefact."""

    is_main = True  # whether this process writes metrics, checkpoints and reports

    # ------------------------------------------------------------------ setup
    def check(self, objective: Any, regularizers: Sequence[Any]) -> None:
        """Refuse combinations the strategy cannot run (none in one process)."""

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """The module that runs forward/backward (DDP wraps it; one process: ``model``)."""
        return model

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The module an evaluator is given (the plain model, not a wrapper)."""
        return model

    def wrap_objective(self, objective: Any) -> Any:
        return objective

    def wrap_source(self, source: BatchSource) -> BatchSource:
        """This process's part of each batch (one process: all of it)."""
        return source

    def bind_optimizer(self, build: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
        """Called once with how the run's optimizer is built (``build(module)``)."""

    def shared_run_id(self, run_id: str, device: torch.device) -> str:
        """One run id on every process (one process: its own)."""
        return run_id

    # ------------------------------------------------------------------ a step
    def no_sync(self, model: nn.Module, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        """Context for one micro-batch's forward and backward; data parallelism skips the
        gradient all-reduce until the last micro-batch of the step."""
        return contextlib.nullcontext()

    def mean_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics computed per process (an online rollout's) averaged over processes."""
        return metrics

    def sync_grads(self, modules: Mapping[str, nn.Module]) -> None:
        """Average the gradients of modules no wrapper syncs (an objective's value head)."""

    def full_tensor(self, value: Tensor | None) -> Tensor | None:
        """A plain tensor from a sharded one (FSDP2's gradient norm is a DTensor)."""
        return value

    def global_tokens(self, tokens: list[Tensor | int]) -> list[Tensor | int]:
        """Each step's token count over all processes (each counted only its slice)."""
        return tokens

    # ------------------------------------------------------------------ checkpoints
    def non_finite(self, bad: list[str]) -> str | None:
        """What to report when this process (or any, under data parallelism) found
        non-finite weights ``bad``; None when every weight is finite."""
        return f"weights ({', '.join(bad)}) after the update" if bad else None

    def save_checkpoint(
        self,
        mgr: CheckpointManager,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        write: CheckpointWriter,
    ) -> Path | None:
        """Write checkpoint ``step`` of ``model`` and ``optimizer`` with ``write``."""
        return write(model, optimizer)

    def checkpoint_to_resume(self, mgr: CheckpointManager | None) -> Path | None:
        """The newest intact checkpoint (damaged newer ones are set aside), or None.

        Raises:
            CorruptCheckpointError: there are checkpoints but none is intact.
        """
        if mgr is None or not mgr.checkpoints():
            return None
        latest = mgr.latest_intact(set_aside=True)
        if latest is None:
            raise CorruptCheckpointError(mgr.root, "no intact checkpoint left to resume from")
        return latest

    def load_checkpoint(
        self,
        mgr: CheckpointManager,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, Any]:
        """Load ``path`` into ``model`` and ``optimizer``; the saved trainer state."""
        # latest_intact has just verified it
        return mgr.load(path, model=model, optimizer=optimizer, verify=False)


__all__ = ["CheckpointWriter", "SingleProcess"]
