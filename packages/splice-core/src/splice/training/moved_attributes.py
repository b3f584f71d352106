"""Trainer attributes that moved to its parts, kept as deprecated aliases for one minor version.

The Trainer was split into ``checkpoints`` (``RunCheckpoints``), ``evals`` (``EvalSchedule``)
and ``log`` (``RunLog``). Code written against the old attributes keeps working: reading or
setting ``trainer.evaluator`` reaches ``trainer.evals.evaluator`` with a
``DeprecationWarning`` (a silent new attribute on the Trainer would be ignored by the loop).
"""

from __future__ import annotations

from typing import Any

from splice.deprecation import ALIASES, warn_deprecated

REMOVED_IN = "splice-core 0.3.0"


class MovedAttribute:
    """A descriptor forwarding ``trainer.<old>`` to ``trainer.<part>.<new>`` with a warning."""

    def __init__(self, part: str, new: str) -> None:
        self.part, self.new = part, new

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = f"Trainer.{name}"
        ALIASES[self.old] = (self.target, REMOVED_IN)

    @property
    def target(self) -> str:
        return f"Trainer.{self.part}.{self.new}"

    def __get__(self, trainer: Any, owner: type | None = None) -> Any:
        if trainer is None:
            return self
        warn_deprecated(self.old, self.target, removed_in=REMOVED_IN)
        return getattr(getattr(trainer, self.part), self.new)

    def __set__(self, trainer: Any, value: Any) -> None:
        warn_deprecated(self.old, self.target, removed_in=REMOVED_IN)
        setattr(getattr(trainer, self.part), self.new, value)


class MovedTrainerAttributes:
    """The Trainer's pre-split attribute names (see the splice-core CHANGELOG)."""

    evaluator = MovedAttribute("evals", "evaluator")
    eval_every = MovedAttribute("evals", "every")
    history = MovedAttribute("evals", "history")
    run_id = MovedAttribute("checkpoints", "run_id")
    finite_through = MovedAttribute("checkpoints", "finite_through")

    def last_good_checkpoint(self) -> Any:
        """Deprecated: ``trainer.checkpoints.last_good()``."""
        warn_deprecated(
            "Trainer.last_good_checkpoint()",
            "Trainer.checkpoints.last_good()",
            removed_in=REMOVED_IN,
        )
        return self.checkpoints.last_good()  # type: ignore[attr-defined]

    def metrics_log(self) -> Any:
        """Deprecated: ``trainer.log.file()``."""
        warn_deprecated("Trainer.metrics_log()", "Trainer.log.file()", removed_in=REMOVED_IN)
        return self.log.file()  # type: ignore[attr-defined]
