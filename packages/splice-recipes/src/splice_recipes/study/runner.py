"""Running a study: every arm once per seed under one progress bar, each run in its own
folder, then the claims judged and the study's files written.

A recipe supplies ``run_one(arm, seed, folder) -> {metric: value}``; runs go seed by seed
(all arms of seed 0, then seed 1, ...) so a recipe can build what one seed's arms share
(a pre-trained base) once, under ``<study>/shared/seed-<s>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from splice_recipes.study.machine import Clock, environment
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
    clock: Clock | None = None,
) -> StudyResult:
    """Run ``arms`` x ``config.seed_list()``, judge ``claims``, write the study folder.

    Each run's figures are also saved as ``<study>/<arm>/seed-<s>/result.json``.
    ``extras(result)`` (optional) returns the recipe's own JSON record, stored in
    ``study.json`` under ``extras`` (a recipe may also write its own plots there).
    ``clock`` (optional): a ``Clock`` the recipe started before its own preparation (a
    dev-split tuning, say), so the recorded wall and CPU times cover it; else one starts
    here.

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
    clock = clock or Clock.start()
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
    clocks = clock.stop()
    env["load_average_1min"] = clocks["load_start"]
    env["load_average_1min_end"] = clocks["load_end"]
    result = StudyResult(
        name=config.name,
        config=config.model_dump(mode="json"),
        environment=env,
        seeds=seeds,
        figures=figures,
        claims=[judge(c, figures, seeds, config.confidence) for c in claims],
        wall_time_s=float(clocks["wall_time_s"] or 0.0),
        cpu_time_s=clocks["cpu_time_s"],
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
        "cpu_time_s": None if result.cpu_time_s is None else round(result.cpu_time_s, 1),
        **{f"claim {cr.claim.name}": f"{cr.verdict} ({interval_text(cr)})" for cr in result.claims},
    }


def run_and_report(
    config: StudyConfig,
    *,
    arms: Sequence[str],
    run_one: RunOne,
    claims: Sequence[Claim],
    extras: Callable[[StudyResult], Mapping[str, Any]] | None = None,
    clock: Clock | None = None,
    show: Sequence[str] = ("side_table",),
    notes: Callable[[StudyResult], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """A recipe's whole tail: ``run_study``, then print its tables, notes and claim lines,
    and return the ``summary`` (what ``splice run`` prints).

    Args:
        show: keys of ``result.extras`` printed first, as they are (the recipe's side
            tables); missing keys are skipped.
        notes: ``notes(result)`` returns the recipe's own lines, printed after the tables
            and before the claim lines.
        (the rest as ``run_study``)
    """
    result = run_study(
        config, arms=arms, run_one=run_one, claims=claims, extras=extras, clock=clock
    )
    for key in show:
        if key in result.extras:
            print(result.extras[key])
    for line in [*(notes(result) if notes else []), *claim_lines(result)]:
        print(line)
    return summary(result, config.run_dir())
