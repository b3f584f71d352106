"""What a run prints while it trains: the progress bar's fields and the eval lines.

An online (RL) step's loss is a surrogate whose value says little (GRPO's is often
``0.0000``: group-normalised advantages sum to zero), so its bar shows the mean reward,
the KL to the reference and the completion length instead. An evaluation over several
tasks prints one line per task (skill), not one line mixing them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: (train-record key, bar label) shown for online runs, in this order.
RL_FIELDS = (("reward", "reward"), ("kl", "kl"), ("completion_length", "len"))
#: Metric names whose first ``/`` segment is part of the name, not an eval task's prefix.
_UNPREFIXED_ROOTS = ("reward",)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def progress_fields(records: Sequence[Mapping[str, Any]], tokens_per_s: float) -> dict[str, str]:
    """The progress bar's postfix for a window of ``train`` records.

    Records with a ``reward`` (online runs) give ``reward``, ``kl`` and ``len`` (mean
    completion length, tokens), each averaged over the window and shown when present;
    the rest give ``loss``. ``tok_s`` always closes the bar.
    """
    fields: dict[str, str] = {}
    if any("reward" in r for r in records):
        for key, label in RL_FIELDS:
            values = [float(r[key]) for r in records if key in r]
            if values:
                fields[label] = f"{_mean(values):.3g}"
    elif records:
        fields["loss"] = f"{_mean([float(r['loss']) for r in records]):.4f}"
    fields["tok_s"] = f"{tokens_per_s:.0f}"
    return fields


def eval_lines(step: int, result: Mapping[str, Any]) -> list[str]:
    """One line per evaluated task: ``step 400 [add]: exact_match=0.91, reward/accuracy=0.93``.

    Metrics named ``<task>/<metric>`` (``eval.tasks``) go on their task's line; the
    training task's own metrics (no prefix, ``reward/...`` included) on the first line,
    labelled ``held-out``. Only float values are shown.
    """
    groups: dict[str, dict[str, float]] = {}
    for key, value in result.items():
        if not isinstance(value, float):
            continue
        head, sep, rest = key.partition("/")
        task, name = (head, rest) if sep and head not in _UNPREFIXED_ROOTS else ("", key)
        groups.setdefault(task, {})[name] = value
    ordered = sorted(groups, key=lambda t: (t != "", t))  # the training task first
    return [
        f"step {step} [{t or 'held-out'}]: "
        + ", ".join(f"{k}={v:.3g}" for k, v in groups[t].items())
        for t in ordered
    ]


__all__ = ["RL_FIELDS", "eval_lines", "progress_fields"]
