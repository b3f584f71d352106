"""Module-level jobs for testing the worker pools (``study.parallel``): a spawned worker
imports a job by its module and name, which a function defined in a test module does not
always allow (pytest's ``importlib`` import mode gives test modules no importable name)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def staged_arm(config: Any, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """A start (``arm == "start"``) writes ``10 * seed``; every other arm reads its seed's
    start and adds ``len(arm)``, so it fails unless the start ran first. ``pid`` says which
    process ran it."""
    if arm == "start":
        (folder / "start.json").write_text(json.dumps({"value": 10.0 * seed}))
        return {"value": 10.0 * seed, "pid": float(os.getpid())}
    start = json.loads((config.arm_dir("start", seed) / "start.json").read_text())
    return {"value": start["value"] + len(arm), "pid": float(os.getpid())}


def damaged_checkpoint(folder: str) -> None:
    """Raise the ``CorruptCheckpointError`` of ``folder`` (an exception whose constructor
    takes two arguments), as a worker that finds a damaged checkpoint would."""
    from splice.checkpoint.integrity import CorruptCheckpointError

    raise CorruptCheckpointError(folder, "manifest.json is damaged ('files')")
