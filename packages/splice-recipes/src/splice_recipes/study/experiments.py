"""One arm x seed run of a standard ``ExperimentConfig``: pinned to the study's precision
and seed, trained into the run's folder, read as the mean of its last evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splice.training.configs import ExperimentConfig

from splice_recipes.study.results import mean_of_last_evals
from splice_recipes.study.spec import StudyConfig


def pinned(
    exp: ExperimentConfig, study: StudyConfig, *, seed: int, folder: Path
) -> ExperimentConfig:
    """``exp`` with the study's seed, precision and folder, its own progress bar off (the
    study shows one over all runs)."""
    train = exp.train.model_copy(update={"precision": study.precision, "progress": False})
    return exp.model_copy(update={"seed": seed, "output_dir": str(folder), "train": train})


def run_arm(
    exp: ExperimentConfig,
    study: StudyConfig,
    *,
    seed: int,
    folder: Path,
    metrics: Sequence[str] = ("exact_match", "eval_loss"),
) -> dict[str, float]:
    """Train ``exp`` pinned (see ``pinned``) and return its figures: each of ``metrics`` as
    the mean of the last ``study.last_evals`` evaluations, plus ``ms_per_step`` (training
    time per optimizer step, evaluation excluded), ``final_train_loss`` and
    ``trainable_params``.

    Raises:
        ValueError: a metric no evaluation logged (names the metric and the file).
    """
    from splice.training.experiment import run_experiment

    run = pinned(exp, study, seed=seed, folder=folder)
    report: dict[str, Any] = run_experiment(run, overwrite=True)
    out = {m: mean_of_last_evals(folder / "metrics.jsonl", m, study.last_evals) for m in metrics}
    out["ms_per_step"] = 1000.0 * float(report["train_time_s"]) / max(int(report["steps"]), 1)
    out["final_train_loss"] = float(report["final_train_loss"])
    if "trainable_params" in report:
        out["trainable_params"] = float(report["trainable_params"])
    return out
