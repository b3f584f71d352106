"""Reading a run's result from its ``metrics.jsonl``: the mean of its last few evaluations,
because accuracy moves several points between neighbouring evaluations."""

from __future__ import annotations

from pathlib import Path

from splice.training.metrics import read_metrics


def mean_of_last_evals(metrics_path: str | Path, key: str, last: int = 3) -> float:
    """The mean of ``key`` over the last ``last`` eval records (fewer if the run has fewer).

    Raises:
        ValueError: no eval record of the file holds ``key``.
    """
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    values = [
        float(r[key])
        for r in read_metrics(metrics_path)
        if r.get("kind") == "eval" and r.get(key) is not None
    ]
    if not values:
        raise ValueError(f"{metrics_path}: no eval record has {key!r}")
    tail = values[-last:]
    return sum(tail) / len(tail)
