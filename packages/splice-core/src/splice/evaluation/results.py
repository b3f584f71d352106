"""Evaluation results as JSON in the run folder."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from splice.checkpoint import atomic_write_text


def _jsonable(value: Any) -> Any:
    # JSON has no inf/nan: write null (as metrics.jsonl does) so every parser reads the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_results(run_dir: str | Path, results: Mapping[str, Any], *, name: str = "eval") -> Path:
    """Write ``results`` to ``<run_dir>/<name>.json`` atomically; returns the path."""
    path = Path(run_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, results_json(results) + "\n")
    return path


def results_json(results: Mapping[str, Any]) -> str:
    """``results`` as standard JSON text: non-finite numbers become ``null``."""
    return json.dumps(_jsonable(results), indent=2, sort_keys=True, allow_nan=False)


__all__ = ["results_json", "write_results"]
