"""The checkpoints of one run: where they go, which one is good, and what a divergence sets aside.

The ``Trainer`` writes a checkpoint through its parallel strategy and loads one back on
resume; this module keeps the bookkeeping around that, the same in one process and under
data parallelism:

* ``run_id`` names the run's checkpoints (a resume takes it back from the checkpoint), so
  pruning and the messages below only ever touch this run's folders;
* ``finite_through`` is the last step whose loss was seen finite, and ``last_good()`` the
  newest checkpoint below it (``splice.training.nan_guard`` says why that is "good");
* ``last`` is the newest checkpoint written or loaded (after a divergence: the last good one).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn

from splice.checkpoint import CheckpointManager
from splice.training.nan_guard import (
    NonFiniteLossError,
    divergence_message,
    newest_good,
    set_aside_unverified,
)
from splice.training.parallel import SingleProcess

# () -> (trainer state, extra tensors or None): what a checkpoint holds besides the weights
# and the optimizer; called only on the process that writes.
CheckpointContents = Callable[[], tuple[dict[str, Any], "dict[str, Tensor] | None"]]


class RunCheckpoints:
    """The bookkeeping of a run's ``run_dir / "checkpoints"`` (nothing when ``run_dir`` is None).

    Args:
        run_dir: the run folder, or None for a run that writes nothing.
        keep_last: how many of this run's checkpoints pruning keeps (None: all).
        parallel: the run's parallel strategy (it gathers, writes and loads).
        device: this process's device (the run id is broadcast from the main process).
    """

    def __init__(
        self,
        run_dir: Path | None,
        *,
        keep_last: int | None,
        parallel: SingleProcess,
        device: torch.device,
    ) -> None:
        self.run_dir, self.keep_last, self.parallel = run_dir, keep_last, parallel
        self.is_main = parallel.is_main  # only the main process writes, renames and prunes
        # names this run's checkpoints; one id on every process; a resume takes it back
        self.run_id = parallel.shared_run_id(uuid.uuid4().hex, device)
        self.finite_through = 0  # the last step whose loss was seen finite
        self.last: Path | None = None

    @property
    def manager(self) -> CheckpointManager | None:
        """A manager of this run's checkpoints (None without a run folder)."""
        if self.run_dir is None:
            return None
        return CheckpointManager(
            self.run_dir / "checkpoints", keep_last=self.keep_last, run_id=self.run_id
        )

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        contents: CheckpointContents,
        *,
        config: dict[str, Any] | None,
    ) -> Path | None:
        """Write checkpoint ``step`` (None without a run folder); the newest good checkpoint
        is protected from pruning. The caller has checked the weights are finite."""
        mgr = self.manager
        if mgr is None:
            return None

        def write(full_model: nn.Module, full_optimizer: torch.optim.Optimizer | None) -> Path:
            state, tensors = contents()
            return mgr.save(
                step,
                model=full_model,
                optimizer=full_optimizer,
                state=state,
                config=config,
                protect=[self.last_good()],
                extra_tensors=tensors,
            )

        self.last = self.parallel.save_checkpoint(mgr, step, model, optimizer, write)
        return self.last

    def load_latest(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        """Load the newest intact checkpoint into ``model`` and ``optimizer``: ``(its folder,
        the trainer state it holds)``, or None when there is none. Damaged newer ones are
        reported, set aside (``step-N.corrupt``) and skipped.

        Raises:
            CorruptCheckpointError: there are checkpoints but none is intact.
        """
        mgr = self.manager
        latest = self.parallel.checkpoint_to_resume(mgr)
        if latest is None or mgr is None:
            return None
        state = self.parallel.load_checkpoint(mgr, latest, model, optimizer)
        # the run reached this step with finite losses, and goes on under its run id
        self.last, self.finite_through = latest, int(state["step"])
        self.run_id = str(state.get("run_id", self.run_id))
        return latest, state

    def last_good(self) -> Path | None:
        """The newest checkpoint known to hold finite weights that give a finite loss."""
        return newest_good(self.manager, self.finite_through)

    def has_step(self, step: int) -> bool:
        """Whether the newest checkpoint written or loaded is the one of ``step``."""
        return self.last is not None and self.last.name.endswith(f"{step:06d}")

    def stop_diverged(self, what: str, step: int) -> NoReturn:
        """Step ``step`` gave ``what`` (a non-finite loss or gradient norm), so the weights it
        saw (those of step ``step - 1``) are bad: set aside (main process only) the
        checkpoints from there on, and raise naming the last good one.

        Raises:
            NonFiniteLossError: always.
        """
        self.finite_through = step - 1
        aside = set_aside_unverified(self.manager if self.is_main else None, self.finite_through)
        self.last = self.last_good()  # on every rank
        raise NonFiniteLossError(divergence_message(what, step, self.last, aside))

    def prune(self) -> None:
        """Keep ``keep_last`` of this run's checkpoints (main process only); call it once the
        newest one is verified finite."""
        mgr = self.manager if self.is_main else None
        if mgr is not None:
            mgr.prune()


__all__ = ["CheckpointContents", "RunCheckpoints"]
