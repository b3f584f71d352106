"""Recipe ``arithmetic``: a small dense decoder learns addition from scratch, and learns it
better when the answer is written in the order carries are computed.

The ``addition`` recipe's 2-layer, d=128 decoder (splice-mha attention, RoPE, pre-norm),
1000 steps, is trained with SFT on 1-2 digit addition in two
arms that differ only in how the answer is written:

* ``reversed``: least-significant digit first (``37+25=`` -> ``26``), the order in which
  carries are computed, so each digit depends only on digits already seen;
* ``plain``: the usual order (``37+25=`` -> ``62``), where the first digit written needs the
  carry from the last.

Both arms see the same problems for each seed. Every run is scored by greedy exact match on
the whole held-out split (about 1,000 problems never trained on, each once), read as the
mean of its last evaluations. Claims: ``reversed`` beats ``plain``, and ``reversed`` gets
above 95% of the held-out problems right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from splice.recipe import Recipe
from splice.training.configs import ExperimentConfig

from splice_recipes import addition
from splice_recipes.study import Claim, StudyConfig, StudyResult, run_and_report, run_arm

ARMS = {"reversed": True, "plain": False}  # arm -> reverse_answer


def _experiment() -> ExperimentConfig:
    """The ``addition`` recipe's run, evaluated every 100 steps on the whole held-out split
    (it holds ~1,000 problems; asking for more gives each once)."""
    exp = addition.config()
    train = exp.train.model_copy(update={"steps": 1000, "checkpoint_every": 1000})
    ev = exp.eval.model_copy(update={"every": 100, "exact_match_examples": 2000})
    return exp.model_copy(update={"name": "arithmetic", "train": train, "eval": ev})


class ArithmeticStudy(StudyConfig):
    """The study: ``experiment`` is one run's config; each arm sets the answer order.

    Attributes:
        experiment: the training run of one arm and seed (its seed, precision and folder are
            set by the study).
    """

    name: str = "arithmetic"
    seeds: int = 3
    experiment: ExperimentConfig = Field(default_factory=_experiment)


CLAIMS = [
    Claim(
        "reversed-beats-plain",
        "reversed",
        "plain",
        "exact_match",
        "higher",
        scale=100,
        unit=" pt",
        text="answer written least-significant digit first beats the usual "
        "order (held-out exact match)",
    ),
    Claim(
        "reversed-learns",
        "reversed",
        0.95,
        "exact_match",
        "higher",
        scale=100,
        unit=" pt",
        text="the reversed-answer decoder gets over 95% of held-out sums right",
    ),
]


def arm_experiment(config: ArithmeticStudy, arm: str) -> ExperimentConfig:
    """The experiment of one arm: the base with the arm's answer order."""
    exp = config.experiment
    task = exp.data.task.model_copy(update={"reverse_answer": ARMS[arm]})
    return exp.model_copy(update={"data": exp.data.model_copy(update={"task": task})})


def run(config: ArithmeticStudy) -> dict[str, Any]:
    """Run both arms over the seeds; print each claim's verdict."""

    def run_one(arm: str, seed: int, folder: Path) -> dict[str, float]:
        return run_arm(arm_experiment(config, arm), config, seed=seed, folder=folder)

    def notes(result: StudyResult) -> list[str]:
        return [
            f"{arm}: held-out exact match {iv.mean:.1%} (+- {iv.half_width:.1%}) over {iv.n} seeds"
            for arm in ARMS
            for iv in [result.interval(arm, "exact_match")]
        ]

    return run_and_report(config, arms=list(ARMS), run_one=run_one, claims=CLAIMS, notes=notes)


def config() -> ArithmeticStudy:
    return ArithmeticStudy()


recipe = Recipe(
    name="arithmetic",
    description="2-layer decoder learns 1-2 digit addition, answer reversed vs plain, over "
    "seeds; held-out exact match with intervals",
    config=config,
    run=run,
)
