"""When a run evaluates, and the evaluations it made.

The ``Trainer`` evaluates every ``eval_every`` steps and once at the end, never twice for
one step: a finished run that is resumed takes its logged final evaluation back from
``metrics.jsonl`` instead of running (and logging) it again. An evaluation runs with the
model in eval mode, without gradients and eagerly (generation changes shapes every step, which
would recompile a compiled model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splice.training.compile import eager
from splice.training.metrics import read_metrics

Evaluator = Callable[[nn.Module], Mapping[str, float]]


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode, without gradients, compiled modules run eagerly; the mode it
    had is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), eager():
            yield
    finally:
        model.train(was_training)


class EvalSchedule:
    """``evaluator(model) -> {name: value}`` every ``every`` steps (None or 0: only at the end).

    Attributes:
        history: the ``eval`` records made (or taken back from the log), oldest first.
        done_at: the step of the newest record (-1: none yet).
    """

    def __init__(self, evaluator: Evaluator | None, every: int | None) -> None:
        self.evaluator, self.every = evaluator, every
        self.history: list[dict[str, Any]] = []
        self.done_at = -1

    def due(self, step: int) -> bool:
        """Whether the loop evaluates after step ``step``."""
        return bool(self.every) and step % self.every == 0  # type: ignore[operator]

    def run(
        self,
        model: nn.Module,
        *,
        step: int,
        evaluated: nn.Module | None = None,
        context: contextlib.AbstractContextManager[Any] | None = None,
    ) -> dict[str, Any] | None:
        """Evaluate at ``step`` in ``evaluation_mode(model)``; the ``eval`` record it keeps
        (None without an evaluator).

        Args:
            model: the module whose mode is switched (a DDP wrapper, under data parallelism).
            evaluated: the module the evaluator is given (default ``model``).
            context: entered around the evaluation too (the run's autocast).
        """
        if self.evaluator is None:
            return None
        with evaluation_mode(model), context or contextlib.nullcontext():
            result = dict(self.evaluator(evaluated if evaluated is not None else model))
        rec = {"kind": "eval", "step": step, **result}
        self.history.append(rec)
        self.done_at = step
        return rec

    def final(self, step: int) -> dict[str, Any] | None:
        """The record of ``step`` if the run already evaluated there, else None."""
        return self.history[-1] if self.history and self.done_at == step else None

    def take_back_logged(self, metrics_path: Path | None, step: int) -> None:
        """A resumed run that had already finished at ``step``: take its logged evaluation
        of that step back (so the end of the loop does not run and log it twice)."""
        if metrics_path is None or not metrics_path.is_file():
            return
        evals = [r for r in read_metrics(metrics_path) if r.get("kind") == "eval"]
        if evals and evals[-1].get("step") == step:
            self.history.append(evals[-1])
            self.done_at = step


__all__ = ["EvalSchedule", "Evaluator", "evaluation_mode"]
