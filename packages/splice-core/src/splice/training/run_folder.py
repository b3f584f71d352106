"""A run folder belongs to one run: an OS lock against concurrent runs, a refusal to reuse it.

``claim_run_folder(run_dir, resume=..., overwrite=...)`` is held for the whole of a run:

* it takes an exclusive ``flock`` on ``<run_dir>/splice.lock`` (the kernel releases it when
  the process dies, even by ``kill -9``, so a stale lock never blocks anyone); a second run
  into the same folder is refused with the holder's PID;
* a *fresh* run into a folder that already holds checkpoints is refused (it would mix its
  checkpoints, metrics and report with another run's), unless ``overwrite`` deletes them;
* ``resume=True`` with no checkpoint to resume is an error; ``resume="auto"`` resumes when
  there is one and starts fresh otherwise;
* temporaries left by a killed writer (``.tmp-*``) are deleted, now that no live writer can
  own them.

Claims are re-entrant within a process (``run_experiment`` claims before writing
``config.json``, then its ``Trainer`` claims the same folder again).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from splice.checkpoint.atomic import remove_stale_temporaries

ResumeMode = bool | Literal["auto"]
LOCK_FILE = "splice.lock"
CHECKPOINT_DIR = "checkpoints"
# What ``overwrite`` deletes: a run's own artefacts, never other files a user put there.
RUN_ARTEFACTS = ("metrics.jsonl", "report.md", "curves.png")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


class RunFolderLockedError(RunFolderError):
    """Another live process holds the folder's lock."""


class RunFolderNotEmptyError(RunFolderError):
    """A fresh run was asked for in a folder that holds another run's checkpoints."""


class NothingToResumeError(RunFolderError):
    """``resume=True`` but the folder holds no checkpoint."""


def checkpoint_entries(run_dir: Path) -> list[str]:
    """Names under ``<run_dir>/checkpoints`` that belong to a run (``step-*``, set-aside ones too)."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("step-"))


def _resumable(names: list[str]) -> list[str]:
    return [n for n in names if n[len("step-") :].isdigit()]


class _Lock:
    """An exclusive, non-blocking OS lock on a file; the file records the holder's PID."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            _lock_fd(self.fd)
        except OSError:
            holder = _read_pid(self.fd)
            os.close(self.fd)
            raise RunFolderLockedError(
                f"{path.parent} is in use by another run ({holder}); wait for it to finish, "
                "or give this run another folder (--output-dir)"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the descriptor drops the lock


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: lock the first byte instead
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 64, 0).decode().strip()
        if text:
            return f"PID {int(text)}"
    return "PID unknown"


_HELD: dict[Path, _Lock] = {}


@contextlib.contextmanager
def claim_run_folder(
    run_dir: str | Path | None, *, resume: ResumeMode = False, overwrite: bool = False
) -> Iterator[Path | None]:
    """Hold ``run_dir`` for one run (see the module docstring); ``None`` claims nothing.

    Raises:
        RunFolderLockedError: another live process is running into ``run_dir``.
        RunFolderNotEmptyError: a fresh run (not ``resume``, not ``overwrite``) into a
            folder holding checkpoints.
        NothingToResumeError: ``resume=True`` and no checkpoint to resume.
        ValueError: ``resume`` and ``overwrite`` together.
    """
    if run_dir is None:
        yield None
        return
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume keeps the checkpoints")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    lock = _HELD.get(key)
    if lock is None:
        lock = _HELD[key] = _Lock(run_dir / LOCK_FILE)
    lock.count += 1
    try:
        if lock.count == 1:  # the outermost claim checks and cleans; nested ones trust it
            _check(run_dir, resume=resume, overwrite=overwrite)
            remove_stale_temporaries(run_dir)
            remove_stale_temporaries(run_dir / CHECKPOINT_DIR)
        yield run_dir
    finally:
        lock.count -= 1
        if lock.count == 0:
            del _HELD[key]
            lock.release()


def _check(run_dir: Path, *, resume: ResumeMode, overwrite: bool) -> None:
    names = checkpoint_entries(run_dir)
    if resume is True and not _resumable(names):
        extra = f" (only set-aside ones: {', '.join(names)})" if names else ""
        raise NothingToResumeError(
            f"nothing to resume: {run_dir / CHECKPOINT_DIR} holds no checkpoint{extra}; "
            "run without --resume to start fresh, or use --resume auto"
        )
    if resume or not names:
        return
    if overwrite:
        shutil.rmtree(run_dir / CHECKPOINT_DIR)
        for name in RUN_ARTEFACTS:
            (run_dir / name).unlink(missing_ok=True)
        return
    shown = ", ".join(names[-3:]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise RunFolderNotEmptyError(
        f"{run_dir} already holds checkpoints of a run ({shown}); a new run there would mix "
        "with it. Continue that run with --resume, give this one another --output-dir, "
        "or pass --overwrite to delete them first"
    )


__all__ = [
    "NothingToResumeError",
    "ResumeMode",
    "RunFolderError",
    "RunFolderLockedError",
    "RunFolderNotEmptyError",
    "checkpoint_entries",
    "claim_run_folder",
]
