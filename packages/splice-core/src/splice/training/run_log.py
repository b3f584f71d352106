"""What a run reports as it trains: ``metrics.jsonl`` and the progress bar.

Only the main process writes the file and shows the bar (under data parallelism every
process logs through one of these, and the others' are silent). The ``Trainer`` gives it
each flush's ``train`` records and each ``eval`` record; a fresh run starts a fresh file, and
a resumed one drops the lines its killed predecessor logged after the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from splice.training.metrics import MetricsLog
from splice.training.progress import Progress


class RunLog:
    """``run_dir / "metrics.jsonl"`` (nothing when ``run_dir`` is None) and a progress bar.

    Args:
        run_dir: the run folder, or None for a run that writes nothing.
        is_main: whether this process writes and shows anything.
        title: the progress bar's label.
    """

    def __init__(self, run_dir: Path | None, *, is_main: bool, title: str) -> None:
        self.path = run_dir / "metrics.jsonl" if run_dir is not None else None
        self.is_main, self.title = is_main, title
        self.progress: Progress | None = None  # inside ``open``

    def file(self) -> MetricsLog:
        """The metrics file (a no-op writer off the main process or without a run folder)."""
        return MetricsLog(self.path if self.is_main else None)

    @contextlib.contextmanager
    def open(self, *, steps: int, step: int, fresh: bool, show: bool) -> Iterator[None]:
        """Inside the block, a bar from ``step`` to ``steps`` (shown when ``show``); a
        ``fresh`` run starts a new file."""
        if self.path is not None and self.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                self.path.unlink(missing_ok=True)
        self.progress = Progress(steps, step, self.title, enabled=show and self.is_main)
        try:
            yield
        finally:
            self.progress.close()
            self.progress = None

    def truncate_after(self, step: int) -> None:
        """Drop the lines past ``step`` (a resumed run logs them again)."""
        self.file().truncate_after(step)

    def train(self, records: Sequence[dict[str, Any]], tokens_per_s: float | None = None) -> None:
        """Write a flush's ``train`` records; move the bar when ``tokens_per_s`` is given."""
        self.file().write(list(records))
        if self.progress is not None and tokens_per_s is not None:
            self.progress.update(records, tokens_per_s)

    def eval(self, record: Mapping[str, Any]) -> None:
        """Write an ``eval`` record and print its lines above the bar."""
        self.file().write([dict(record)])
        if self.progress is not None and self.is_main:
            result = {k: v for k, v in record.items() if k not in ("kind", "step")}
            self.progress.write_eval(int(record["step"]), result)


__all__ = ["RunLog"]
