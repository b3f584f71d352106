"""The study layer every recipe runs on: arms x seeds, paired differences with Student t
intervals, a shown / not-shown verdict per claim, and the study folder
(``study.json``, ``report.md``, one PNG per claim).

A recipe defines a config (a ``StudyConfig`` subclass), its arms, its claims and
``run_one(arm, seed, folder) -> {metric: value}``, and calls ``run_study``. See
docs/studies.md.
"""

from splice_recipes.study.experiments import pinned, run_arm
from splice_recipes.study.machine import Clock
from splice_recipes.study.parallel import (
    arms_after_start,
    arms_in_workers,
    check_sendable,
    every_arm,
    map_in_workers,
    run_seeds,
    seeds_in_workers,
)
from splice_recipes.study.result import ClaimResult, StudyResult, judge
from splice_recipes.study.results import mean_of_last_evals
from splice_recipes.study.runner import claim_lines, run_and_report, run_study, summary
from splice_recipes.study.spec import Claim, StudyConfig, TunedStudyConfig
from splice_recipes.study.stats import (
    NOT_SHOWN,
    SHOWN,
    Interval,
    paired_differences,
    t_interval,
    t_quantile,
    verdict,
)
from splice_recipes.study.tuning import Tuning, tune, tune_in_workers

__all__ = [
    "NOT_SHOWN",
    "SHOWN",
    "Claim",
    "ClaimResult",
    "Clock",
    "Interval",
    "StudyConfig",
    "StudyResult",
    "TunedStudyConfig",
    "Tuning",
    "arms_after_start",
    "arms_in_workers",
    "check_sendable",
    "claim_lines",
    "every_arm",
    "judge",
    "map_in_workers",
    "mean_of_last_evals",
    "paired_differences",
    "pinned",
    "run_and_report",
    "run_arm",
    "run_seeds",
    "run_study",
    "seeds_in_workers",
    "summary",
    "t_interval",
    "t_quantile",
    "tune",
    "tune_in_workers",
    "verdict",
]
