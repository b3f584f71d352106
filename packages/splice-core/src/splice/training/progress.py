"""What a run prints while it trains: the progress bar's fields and the eval lines.

An online (RL) step's loss is a surrogate whose value says little (GRPO's is often
``0.0000``: group-normalised advantages sum to zero), so its bar shows the mean reward,
the KL to the reference and the completion length instead. An evaluation over several
tasks prints one line per task (skill), not one line mixing them.

``Progress`` is the bar itself: only the main process shows it, and ``Trainer.flush``
updates it once per flush, so it never forces a host sync of its own.
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


class Progress:
    """A tqdm bar over ``total`` steps starting at ``initial`` (a resumed run's step)."""

    def __init__(self, total: int, initial: int, title: str, *, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=title,
            unit="step",
            disable=not enabled,
            dynamic_ncols=True,
        )

    def update(self, records: Sequence[Mapping[str, Any]], tokens_per_s: float) -> None:
        """Move to the last of a flush's ``train`` records and show ``progress_fields``."""
        self.bar.update(int(records[-1]["step"]) - self.bar.n)
        self.bar.set_postfix(**progress_fields(records, tokens_per_s), refresh=False)

    def write_eval(self, step: int, result: Mapping[str, Any]) -> None:
        """``eval_lines`` above the bar (printed even when the bar is hidden)."""
        for line in eval_lines(step, result):
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def announce_trainable(title: str, counts: Mapping[str, Any]) -> None:
    """Print what a run trains (``trainable_summary``'s counts): every run says it."""
    print(
        f"{title}: trainable params {counts['trainable_params']:,} of "
        f"{counts['total_params']:,} ({counts['trainable_percent']:.2f}%)",
        flush=True,
    )


__all__ = ["RL_FIELDS", "Progress", "announce_trainable", "eval_lines", "progress_fields"]
