"""How the CLI reports a failure: one ``splice <cmd>: error: ...`` line with a hint.

A traceback helps the person debugging splice, not the one running it, so it is shown
only with ``--debug`` (anywhere on the command line) or ``SPLICE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback

DEBUG_FLAG = "--debug"


def wants_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether it (or ``SPLICE_DEBUG=1``) asked for tracebacks."""
    debug = DEBUG_FLAG in argv or os.environ.get("SPLICE_DEBUG", "") not in ("", "0")
    return [a for a in argv if a != DEBUG_FLAG], debug


def _hint(exc: BaseException) -> str:
    """What to try next, by kind of error (the message itself says what went wrong)."""
    from splice.training.run_folder import RunFolderError

    if isinstance(exc, RunFolderError):
        return ""  # its message already lists the ways out
    name = type(exc).__name__
    if name == "NonFiniteLossError":
        return ""  # names the step, the last good checkpoint and what to change
    if name == "CorruptCheckpointError":
        return "hint: use an older checkpoint (or --resume, which falls back to one)"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return "hint: check the path"
    if isinstance(exc, MemoryError):
        return "hint: lower train.batch_size or the model size"
    return f"hint: rerun with {DEBUG_FLAG} for the traceback"


def one_line(text: str) -> str:
    """A message on one line (multi-line messages are joined with '; ')."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def report(command: str, exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as ``splice <command>: error: ...`` (traceback first with ``debug``); 1."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, KeyError):  # its text is only the key
        message = f"KeyError: {message}"
    hint = "" if debug else _hint(exc)
    print(f"splice {command}: error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    return 1
