"""A study's results as data: every seed's figures per arm, each claim's paired differences,
interval and verdict, and where it ran. ``StudyResult.to_json()`` is ``study.json``;
``StudyResult.from_json`` reads it back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from splice_recipes.study.spec import Claim
from splice_recipes.study.stats import Interval, paired_differences, t_interval, verdict

# arm -> seed -> metric -> value
Figures = dict[str, dict[int, dict[str, float]]]


@dataclass(frozen=True)
class ClaimResult:
    """One claim judged: per-seed values of both sides, their differences, the interval of
    the mean difference and the verdict (``"shown"`` / ``"not shown"``)."""

    claim: Claim
    seeds: list[int]
    arm_values: list[float]
    baseline_values: list[float] | None  # None when the baseline is a number
    differences: list[float]
    interval: Interval
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return {
            "claim": asdict(self.claim),
            "sentence": self.claim.sentence,
            "seeds": self.seeds,
            "arm_values": self.arm_values,
            "baseline_values": self.baseline_values,
            "differences": self.differences,
            "interval": self.interval.to_json(),
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClaimResult:
        return cls(
            claim=Claim(**d["claim"]),
            seeds=list(d["seeds"]),
            arm_values=list(d["arm_values"]),
            baseline_values=d["baseline_values"],
            differences=list(d["differences"]),
            interval=Interval.from_json(d["interval"]),
            verdict=d["verdict"],
        )


def values(figures: Figures, arm: str, metric: str, seeds: Sequence[int]) -> list[float]:
    """``metric`` of ``arm`` for each of ``seeds``.

    Raises:
        KeyError: the arm, a seed or the metric is missing (names which).
    """
    if arm not in figures:
        raise KeyError(f"no arm {arm!r} in the study (arms: {sorted(figures)})")
    out = []
    for s in seeds:
        run = figures[arm].get(s)
        if run is None:
            raise KeyError(f"arm {arm!r} has no run for seed {s}")
        if metric not in run:
            raise KeyError(f"arm {arm!r} seed {s} has no metric {metric!r} (has {sorted(run)})")
        out.append(float(run[metric]))
    return out


def judge(claim: Claim, figures: Figures, seeds: Sequence[int], confidence: float) -> ClaimResult:
    """Paired differences over ``seeds``, their t interval and the verdict."""
    a = values(figures, claim.arm, claim.metric, seeds)
    b: list[float] | None = None
    if isinstance(claim.baseline, str):
        b = values(figures, claim.baseline, claim.metric, seeds)
        diffs = paired_differences(a, b)
    else:
        diffs = paired_differences(a, claim.baseline)
    iv = t_interval(diffs, confidence)
    return ClaimResult(
        claim, list(seeds), a, b, diffs, iv, verdict(iv, claim.direction, claim.margin)
    )


@dataclass
class StudyResult:
    """Everything ``study.json`` holds. ``extras`` is the recipe's own record (JSON-able).

    ``wall_time_s`` / ``cpu_time_s``: the study's wall clock and the CPU seconds of its
    process and children (from ``run_study``'s ``clock``: the arm x seed runs, and the
    recipe's preparation when it started the clock earlier); the 1-minute load average at
    the start and end is in ``environment``.
    """

    name: str
    config: dict[str, Any]
    environment: dict[str, Any]
    seeds: list[int]
    figures: Figures
    claims: list[ClaimResult]
    wall_time_s: float
    cpu_time_s: float | None = None  # process + children CPU seconds (None: not recorded)
    confidence: float = 0.95
    extras: dict[str, Any] = field(default_factory=dict)

    def values(self, arm: str, metric: str) -> list[float]:
        return values(self.figures, arm, metric, self.seeds)

    def interval(self, arm: str, metric: str) -> Interval:
        """Mean and interval of one arm's metric over the seeds (not paired)."""
        return t_interval(self.values(arm, metric), self.confidence)

    def claim(self, name: str) -> ClaimResult:
        for c in self.claims:
            if c.claim.name == name:
                return c
        raise KeyError(f"no claim {name!r} (claims: {[c.claim.name for c in self.claims]})")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "environment": self.environment,
            "seeds": self.seeds,
            "wall_time_s": self.wall_time_s,
            "cpu_time_s": self.cpu_time_s,
            "confidence": self.confidence,
            "arms": {
                arm: {str(s): dict(m) for s, m in runs.items()}
                for arm, runs in self.figures.items()
            },
            "claims": [c.to_json() for c in self.claims],
            "extras": self.extras,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StudyResult:
        return cls(
            name=d["name"],
            config=d["config"],
            environment=d["environment"],
            seeds=list(d["seeds"]),
            figures={
                arm: {int(s): dict(m) for s, m in runs.items()} for arm, runs in d["arms"].items()
            },
            claims=[ClaimResult.from_json(c) for c in d["claims"]],
            wall_time_s=float(d["wall_time_s"]),
            cpu_time_s=None if d.get("cpu_time_s") is None else float(d["cpu_time_s"]),
            confidence=float(d.get("confidence", 0.95)),
            extras=dict(d.get("extras") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> StudyResult:
        """Read a ``study.json`` (or the ``study.json`` inside a study folder)."""
        p = Path(path)
        p = p / "study.json" if p.is_dir() else p
        try:
            return cls.from_json(json.loads(p.read_text(encoding="utf-8")))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{p}: not a study.json ({exc!r})") from exc
