"""Choosing a hyperparameter on the dev split, never on the reported one.

``tune`` scores each candidate value on the dev split for the tuning seeds, averages a
named metric over those seeds, and picks by a stated rule: the best mean in the stated
direction, ties going to the candidate listed first (list the candidates so that the first
is the one to prefer: the mildest, the cheapest). The record (``Tuning``) keeps every
candidate's dev figures, its score and the choice, for ``study.json`` and ``report.md``.
``tune_in_workers`` does it for several arms at once, their dev runs in worker processes.
Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from splice_recipes.study.parallel import map_in_workers
from splice_recipes.study.stats import Direction

#: ``evaluate(candidate, seed) -> {metric: value}``, scored on the dev split.
EvaluateOnDev = Callable[[Any, int], Mapping[str, float]]


@dataclass(frozen=True)
class Tuning:
    """One dev-split choice.

    Attributes:
        name: what was tuned (an arm, say).
        metric / direction: the dev figure the rule reads and which way is better.
        seeds: the tuning seeds (their mean is each candidate's score).
        candidates: the values tried, in the order listed (JSON-able).
        figures: per candidate, per seed, the dev figures ``evaluate`` returned.
        scores: per candidate, the mean of ``metric`` over ``seeds``.
        chosen: index of the chosen candidate.
    """

    name: str
    metric: str
    direction: Direction
    seeds: list[int]
    candidates: list[Any]
    figures: list[list[dict[str, float]]]
    scores: list[float]
    chosen: int

    @property
    def value(self) -> Any:
        """The chosen candidate."""
        return self.candidates[self.chosen]

    @property
    def rule(self) -> str:
        best = "highest" if self.direction == "higher" else "lowest"
        over = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"seeds {self.seeds}"
        return f"{best} dev {self.metric} (mean over {over}); ties: the first listed"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "direction": self.direction,
            "rule": self.rule,
            "seeds": self.seeds,
            "candidates": self.candidates,
            "figures": self.figures,
            "scores": self.scores,
            "chosen": self.chosen,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Tuning:
        return cls(
            name=d["name"],
            metric=d["metric"],
            direction=d["direction"],
            seeds=list(d["seeds"]),
            candidates=list(d["candidates"]),
            figures=[[dict(f) for f in per_seed] for per_seed in d["figures"]],
            scores=[float(s) for s in d["scores"]],
            chosen=int(d["chosen"]),
        )


def choose(scores: Sequence[float], direction: Direction) -> int:
    """Index of the best score in ``direction``; the first of equal bests; NaN never wins.

    Raises:
        ValueError: no scores, a bad direction, or every score NaN.
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    finite = [(s if direction == "higher" else -s, -i) for i, s in enumerate(scores) if s == s]
    if not finite:
        raise ValueError(f"no candidate has a score to choose by (scores {list(scores)})")
    return -max(finite)[1]


def tune(
    name: str,
    candidates: Sequence[Any],
    evaluate: EvaluateOnDev,
    *,
    metric: str,
    seeds: Sequence[int],
    direction: Direction = "higher",
) -> Tuning:
    """Score each of ``candidates`` on the dev split for each of ``seeds`` (``evaluate``),
    choose by the mean of ``metric`` (see ``Tuning.rule``).

    ``evaluate`` must score the dev split: the reported split stays unseen until the chosen
    value runs. One candidate is allowed (it is then recorded, not chosen among).

    Raises:
        ValueError: no candidates or seeds, or ``evaluate`` did not return ``metric``
            (names the candidate and seed).
    """
    if not candidates:
        raise ValueError(f"tune {name!r}: no candidates")
    if not seeds:
        raise ValueError(f"tune {name!r}: no tuning seeds")
    figures: list[list[dict[str, float]]] = []
    scores: list[float] = []
    for cand in candidates:
        runs = []
        for seed in seeds:
            got = {k: float(v) for k, v in evaluate(cand, seed).items()}
            if metric not in got:
                raise ValueError(
                    f"tune {name!r}: candidate {cand!r} seed {seed} returned no {metric!r} "
                    f"(got {sorted(got)})"
                )
            runs.append(got)
        figures.append(runs)
        xs = [r[metric] for r in runs]
        scores.append(math.fsum(xs) / len(xs))
    return Tuning(
        name=name,
        metric=metric,
        direction=direction,
        seeds=list(seeds),
        candidates=list(candidates),
        figures=figures,
        scores=scores,
        chosen=choose(scores, direction),
    )


def tune_in_workers(
    dev_run: Callable[[str, Any, int], Mapping[str, float]],
    candidates: Mapping[str, Sequence[Any]],
    *,
    metric: str,
    seeds: Sequence[int],
    workers: int,
    direction: Direction = "higher",
    names: Mapping[str, str] | None = None,
) -> list[Tuning]:
    """``tune`` for every arm of ``candidates`` (``{arm: its candidates, first preferred}``),
    the dev runs first, all at once in up to ``workers`` processes (``map_in_workers``).

    ``dev_run(arm, candidate, seed)`` trains ``arm`` at ``candidate`` on a tuning seed and
    scores the dev split; it runs once per ``(arm, candidate, seed)``, arms in the mapping's
    order, then candidates, then seeds (the order a sequential loop would take). It must be
    a module-level function or a ``functools.partial`` of one (``partial(dev_run, config)``):
    it is sent to the worker processes.

    Returns:
        One ``Tuning`` per arm, in order, named ``names[arm]`` (default: the arm).
    """
    jobs = [
        (arm, i, seed)
        for arm, cands in candidates.items()
        for i in range(len(cands))
        for seed in seeds
    ]
    runs = map_in_workers(
        dev_run, [(arm, candidates[arm][i], seed) for arm, i, seed in jobs], workers
    )
    figures = dict(zip(jobs, runs, strict=True))
    names = names or {}
    out = []
    for arm, cands in candidates.items():
        # the candidate's position, not its value, keys the runs: values need not hash
        def on_dev(cand: Any, seed: int, arm: str = arm, cands: Sequence[Any] = cands) -> Any:
            return figures[(arm, list(cands).index(cand), seed)]

        out.append(
            tune(names.get(arm, arm), cands, on_dev, metric=metric, seeds=seeds,
                 direction=direction)
        )  # fmt: skip
    return out


def with_chosen(config: Any, field: str, tunings: Sequence[Tuning]) -> Any:
    """``config`` (a pydantic model) with its ``{name: value}`` dict ``field`` updated by
    every choice, keyed by the tuning's name (``{**config.<field>, name: value, ...}``)."""
    chosen = {**getattr(config, field), **{t.name: t.value for t in tunings}}
    return config.model_copy(update={field: chosen})


def tuning_extras(tunings: Sequence[Tuning], *, scale: float = 1.0, unit: str = "") -> dict:
    """A study's ``extras`` for its dev-split choices: ``tuning`` (every record's
    ``to_json()``, for ``study.json``) and ``dev_choice`` (``tuning_table``, for the report
    and the console); ``{}`` when nothing was tuned (every value pinned)."""
    if not tunings:
        return {}
    return {
        "tuning": [t.to_json() for t in tunings],
        "dev_choice": tuning_table(tunings, scale=scale, unit=unit),
    }


def tuning_table(tunings: Sequence[Tuning], *, scale: float = 1.0, unit: str = "") -> str:
    """Markdown: per tuning, each candidate's dev score, the chosen one in bold, the rule."""
    lines = ["| tuned | candidate | dev score | chosen |", "|---|---|---:|:---:|"]
    for t in tunings:
        for i, (cand, score) in enumerate(zip(t.candidates, t.scores, strict=True)):
            mark = "**yes**" if i == t.chosen else ""
            lines.append(f"| {t.name} | {cand} | {score * scale:.4g}{unit} | {mark} |")
    rules = sorted({t.rule for t in tunings})
    return "\n".join(lines) + ("\n\nRule: " + "; ".join(rules) if rules else "")
