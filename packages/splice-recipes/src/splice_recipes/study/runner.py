"""Running a study: every arm once per seed under one progress bar, each run in its own
folder, then the claims judged and the study's files written.

A recipe supplies ``run_one(arm, seed, folder) -> {metric: value}``; runs go seed by seed
(all arms of seed 0, then seed 1, ...) so a recipe can build what one seed's arms share
(a pre-trained base) once, under ``<study>/shared/seed-<s>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from splice_recipes.study.machine import environment
from splice_recipes.study.report import interval_text, write_json, write_study
from splice_recipes.study.result import Figures, StudyResult, judge
from splice_recipes.study.spec import Claim, StudyConfig

RunOne = Callable[[str, int, Path], Mapping[str, float]]


def check_claims(claims: Sequence[Claim], arms: Sequence[str]) -> None:
    """Claims name arms of the study, and claim names are unique.

    Raises:
        ValueError: naming the claim and the unknown arm, or the repeated name.
    """
    names = [c.name for c in claims]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"claim names must be unique, {dupes} repeat")
    for c in claims:
        for side in (c.arm, c.baseline):
            if isinstance(side, str) and side not in arms:
                raise ValueError(f"claim {c.name!r} names arm {side!r}, not one of {list(arms)}")


def run_study(
    config: StudyConfig,
    *,
    arms: Sequence[str],
    run_one: RunOne,
    claims: Sequence[Claim],
    extras: Callable[[StudyResult], Mapping[str, Any]] | None = None,
) -> StudyResult:
    """Run ``arms`` x ``config.seed_list()``, judge ``claims``, write the study folder.

    Each run's figures are also saved as ``<study>/<arm>/seed-<s>/result.json``.
    ``extras(result)`` (optional) returns the recipe's own JSON record, stored in
    ``study.json`` under ``extras`` (a recipe may also write its own plots there).

    Returns:
        The ``StudyResult`` written to ``<study>/study.json``.
    """
    from tqdm.auto import tqdm

    if len(set(arms)) != len(arms):
        raise ValueError(f"arm names must be unique, got {list(arms)}")
    check_claims(claims, arms)
    folder = Path(config.run_dir())
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", config.model_dump(mode="json"))
    env = environment(config.precision)
    seeds = config.seed_list()
    figures: Figures = {arm: {} for arm in arms}
    t0 = time.perf_counter()
    bar = tqdm(
        total=len(arms) * len(seeds),
        desc=config.name,
        unit="run",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    try:
        for seed in seeds:
            for arm in arms:
                bar.set_postfix_str(f"{arm} seed {seed}")
                run_dir = config.arm_dir(arm, seed)
                run_dir.mkdir(parents=True, exist_ok=True)
                got = {k: float(v) for k, v in run_one(arm, seed, run_dir).items()}
                write_json(run_dir / "result.json", got)
                figures[arm][seed] = got
                bar.update(1)
    finally:
        bar.close()
    result = StudyResult(
        name=config.name,
        config=config.model_dump(mode="json"),
        environment=env,
        seeds=seeds,
        figures=figures,
        claims=[judge(c, figures, seeds, config.confidence) for c in claims],
        wall_time_s=time.perf_counter() - t0,
        confidence=config.confidence,
    )
    if extras is not None:
        result.extras = dict(extras(result))
    write_study(result, folder)
    return result


def claim_lines(result: StudyResult) -> list[str]:
    """One line per claim: sentence, mean difference with interval, verdict."""
    return [
        f"{cr.claim.sentence}: {interval_text(cr)} over {cr.interval.n} seeds -> "
        f"{cr.verdict.upper()}"
        for cr in result.claims
    ]


def summary(result: StudyResult, folder: str | Path) -> dict[str, Any]:
    """What a recipe's ``run`` returns (``splice run`` prints it): the study folder and each
    claim's verdict with its interval."""
    return {
        "name": result.name,
        "run_dir": str(folder),
        "study": str(Path(folder) / "study.json"),
        "wall_time_s": round(result.wall_time_s, 1),
        **{f"claim {cr.claim.name}": f"{cr.verdict} ({interval_text(cr)})" for cr in result.claims},
    }
