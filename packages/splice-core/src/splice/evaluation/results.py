"""Evaluation results as JSON in the run folder."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from splice.checkpoint import atomic_write_text


def _jsonable(value: Any) -> Any:
    # JSON has no inf/nan: write them as strings so the file stays standard JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_results(run_dir: str | Path, results: Mapping[str, Any], *, name: str = "eval") -> Path:
    """Write ``results`` to ``<run_dir>/<name>.json`` atomically; returns the path."""
    path = Path(run_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(_jsonable(results), indent=2, sort_keys=True) + "\n")
    return path


__all__ = ["write_results"]
