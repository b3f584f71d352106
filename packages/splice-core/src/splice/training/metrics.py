"""``metrics.jsonl``: one JSON object per line, ``{"kind": "train"|"eval", "step": ..., ...}``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity: write null so every reader can parse the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends records to ``path``; ``None`` path makes every call a no-op (non-main ranks)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.path is None or not records:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({k: _clean(v) for k, v in r.items()}) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run rewrites what the killed run logged after
        its last checkpoint)."""
        if self.path is None or not self.path.is_file():
            return
        keep = [line for line in read_metrics(self.path) if line.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl``; a torn last line (killed writer) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
