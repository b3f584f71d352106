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

``claim_study_folder(root, overwrite=...)`` holds the root of a multi-stage run (a recipe
whose stages are sub-runs in folders below it) for all of its stages: a second copy is
refused while the first runs, and a new run into a root that holds an earlier run's
sub-runs is refused unless ``overwrite`` (so a sub-run's own ``overwrite=True`` only ever
replaces this run's work).
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
    if resume and not _resumable(names) and names:
        # Only set-aside (damaged, non-finite) checkpoints: the run's records are still
        # here, and neither --resume nor --resume auto may start over on top of them.
        flag = "--resume auto" if resume == "auto" else "--resume"
        raise NothingToResumeError(
            f"nothing to resume: {run_dir / CHECKPOINT_DIR} holds no intact checkpoint, only "
            f"set-aside ones ({', '.join(names[-3:])}); {flag} will not start over on top of "
            "that run's records. Pass --overwrite to delete them and start fresh, or give "
            "this run another --output-dir"
        )
    if resume is True and not names:
        raise NothingToResumeError(
            f"nothing to resume: {run_dir / CHECKPOINT_DIR} holds no checkpoint; "
            "run without --resume to start fresh, or use --resume auto"
        )
    if resume or not names:
        return
    if overwrite:
        _delete_run(run_dir)
        return
    shown = ", ".join(names[-3:]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise RunFolderNotEmptyError(
        f"{run_dir} already holds checkpoints of a run ({shown}); a new run there would mix "
        "with it. Continue that run with --resume, give this one another --output-dir, "
        "or pass --overwrite to delete them first"
    )


def _delete_run(run_dir: Path) -> None:
    """Delete a run's checkpoints and artefacts (``--overwrite``); other files stay."""
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
    for name in RUN_ARTEFACTS:
        (run_dir / name).unlink(missing_ok=True)


def sub_runs(root: Path, depth: int = 3) -> list[Path]:
    """Folders strictly below ``root`` (at most ``depth`` levels) that hold a run's checkpoints."""
    found: list[Path] = []
    level = [root]
    for _ in range(depth):
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir()] if level else []
        level = [c for c in level if c.name != CHECKPOINT_DIR and not c.name.startswith(".")]
        found += [c for c in level if checkpoint_entries(c)]
    return found


@contextlib.contextmanager
def claim_study_folder(root: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Hold ``root``, the folder of a multi-stage run, for all of its stages.

    The lock is ``claim_run_folder``'s (so a sub-run's own claim on ``root/<stage>`` nests
    inside it). Before any stage runs, an earlier run's sub-runs below ``root`` are a
    refusal, or with ``overwrite`` are deleted (their checkpoints and artefacts).

    Raises:
        RunFolderLockedError: another process runs into ``root``.
        RunFolderNotEmptyError: ``root`` holds an earlier run's sub-runs (not ``overwrite``).
    """
    with claim_run_folder(root, overwrite=overwrite) as held:
        assert held is not None
        earlier = sub_runs(held)
        if earlier and not overwrite:
            shown = ", ".join(str(p.relative_to(held)) for p in earlier[:3])
            more = f" and {len(earlier) - 3} more" if len(earlier) > 3 else ""
            raise RunFolderNotEmptyError(
                f"{held} already holds an earlier run's stages ({shown}{more}); a new run there "
                "would overwrite them. Give this run another --output-dir, or pass --overwrite "
                "to delete them first"
            )
        for folder in earlier:
            _delete_run(folder)
        yield held


__all__ = [
    "NothingToResumeError",
    "ResumeMode",
    "RunFolderError",
    "RunFolderLockedError",
    "RunFolderNotEmptyError",
    "checkpoint_entries",
    "claim_run_folder",
    "claim_study_folder",
    "sub_runs",
]
