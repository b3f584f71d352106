"""What the RL studies (``r1-zero``, ``ppo``) share: the held-out evaluation of a run
(greedy completions scored by the training rewards) and how a run's figures are read back
from its ``metrics.jsonl``.

A run's figures: ``acc`` (reward ``accuracy``), ``length`` (completion characters),
``reasoning`` (reward ``reasoning``: the share with a non-empty think block) and
``retention`` (the second skill's exact match, eval task ``sub``), each the mean of the
last few evaluations, and ``kl`` (the mean of the last quarter of the train records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splice.training.configs import EvalConfig

from splice_recipes.study import mean_of_last_evals
from splice_recipes.study.parallel import run_seeds  # noqa: F401  (r1-zero and ppo use it from here)

RETENTION_TASK = "sub"  # the eval task label of the second skill


def eval_config(
    *,
    examples: int,
    max_new_tokens: int,
    tasks: dict[str, Any],
    rewards: list[dict[str, Any]],
    every: int | None,
) -> EvalConfig:
    """Greedy evaluation on ``examples`` distinct held-out problems of each task in
    ``tasks`` (label -> task config), scored by ``rewards``; no loss batches."""
    return EvalConfig(
        every=every,
        loss_batches=0,
        exact_match_examples=examples,
        max_new_tokens=max_new_tokens,
        batch_size=200,
        tasks=tasks,
        rewards=rewards,
    )


def records(folder: Path, kind: str) -> list[dict[str, Any]]:
    """The records of one ``kind`` (``"train"``, ``"eval"``) of the run in ``folder``."""
    from splice.training.metrics import read_metrics

    return [r for r in read_metrics(folder / "metrics.jsonl") if r.get("kind") == kind]


def eval_figures(metrics: Path, prefix: str, last: int) -> dict[str, float]:
    """Accuracy, length, reasoning share (keys under ``prefix``, e.g. ``"add/"``) and
    retention: each the mean of the last ``last`` evaluations in ``metrics``."""

    def read(key: str) -> float:
        return mean_of_last_evals(metrics, key, last)

    return {
        "acc": read(f"{prefix}reward/accuracy"),
        "length": read(f"{prefix}completion_length"),
        "reasoning": read(f"{prefix}reward/reasoning"),
        "retention": read(f"{RETENTION_TASK}/exact_match"),
    }


def figures(folder: Path, last: int) -> dict[str, float]:
    """An RL run's result: :func:`eval_figures` of its own task, and ``kl`` the mean of its
    last quarter of train records (0 without a reference)."""
    kls = [r["kl"] for r in records(folder, "train") if "kl" in r]
    tail = kls[-max(1, len(kls) // 4) :]
    return {
        **eval_figures(folder / "metrics.jsonl", "", last),
        "kl": sum(tail) / len(tail) if tail else 0.0,
    }


def eval_curve(folders: list[Path], keys: dict[str, str]) -> dict[str, list[list[float]]]:
    """Per metric (``name -> eval key``): ``[[step, mean, min, max], ...]`` over the runs in
    ``folders`` (one per seed), at each step where every run evaluated: whether a run
    has reached its plateau, and how far apart the seeds are."""
    return records_curve([records(folder, "eval") for folder in folders], keys)


def records_curve(
    runs: list[list[dict[str, Any]]], keys: dict[str, str]
) -> dict[str, list[list[float]]]:
    """:func:`eval_curve` of runs given as their eval records (one list per seed)."""
    per: dict[str, dict[int, list[float]]] = {m: {} for m in keys}
    for run in runs:
        for r in run:
            for m, key in keys.items():
                if r.get(key) is not None:
                    per[m].setdefault(int(r["step"]), []).append(float(r[key]))
    return {
        m: [
            [float(step), sum(v) / len(v), min(v), max(v)]
            for step, v in sorted(d.items())
            if len(v) == len(runs)
        ]
        for m, d in per.items()
    }
