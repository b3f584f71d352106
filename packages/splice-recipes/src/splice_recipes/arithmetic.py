"""Recipe ``arithmetic``: a small dense decoder learns addition from scratch, and learns it
faster when the answer is written in the order carries are computed.

The ``addition`` recipe's 2-layer, d=128 decoder (splice-mha attention, RoPE, pre-norm) is
trained with SFT on 1-2 digit addition, for the same number of steps, in two arms that differ
only in how the answer is written:

* ``reversed``: least-significant digit first (``37+25=`` -> ``26``), the order in which
  carries are computed, so each digit depends only on digits already seen;
* ``plain``: the usual order (``37+25=`` -> ``62``), where the first digit written needs the
  carry from the last.

Each arm's learning rate is chosen on a **dev split** (10% of the operand pairs, neither
trained on nor reported) by the tuning seed(s), never on the reported split; every reported
seed then runs both arms at their chosen rates, on the same problems. A run is scored by
greedy exact match on the whole held-out (test) split (about 1,000 problems, each once),
read as the mean of its last evaluations. Claims: ``reversed`` beats ``plain`` at this
budget, and ``reversed`` gets above 90% of the held-out problems right.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from splice.recipe import Recipe
from splice.training.configs import ExperimentConfig

from splice_recipes import addition
from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    every_arm,
    run_and_report,
    run_arm,
    seeds_in_workers,
    tune_in_workers,
)
from splice_recipes.study.tuning import tuning_extras, with_chosen

ARMS = {"reversed": True, "plain": False}  # arm -> reverse_answer

#: Share of the operand pairs set aside as the dev split (the reported held-out split is
#: another 10%); the learning rates are chosen there.
DEV_FRACTION = 0.1


def _experiment() -> ExperimentConfig:
    """The ``addition`` recipe's run with a dev split, evaluated every 100 steps on the whole
    held-out split (it holds ~1,000 problems; asking for more gives each once)."""
    exp = addition.experiment()
    task = exp.data.task.model_copy(update={"dev_fraction": DEV_FRACTION})
    train = exp.train.model_copy(update={"steps": 800, "checkpoint_every": 800})
    ev = exp.eval.model_copy(update={"every": 200, "exact_match_examples": 2000})
    return exp.model_copy(
        update={
            "name": "arithmetic",
            "data": exp.data.model_copy(update={"task": task}),
            "train": train,
            "eval": ev,
        }
    )


class ArithmeticStudy(TunedStudyConfig):
    """The study: ``experiment`` is one run's config; each arm sets the answer order and its
    learning rate (chosen on the dev split).

    Attributes:
        experiment: the training run of one arm and seed (its seed, precision and folder are
            set by the study; its task needs a dev split, ``dev_fraction > 0``).
        lr_candidates: the peak learning rates tried on the dev split, per arm (on a tie the
            one listed first wins).
        tuning_seeds: seeds of the dev-split runs (disjoint from the reported seeds).
        lrs: each arm's learning rate, written by the dev-split choice (an arm not listed
            uses ``experiment``'s).
        workers: runs at once, one process each (every run uses one thread; the figures do
            not depend on it).
    """

    name: str = "arithmetic"
    seeds: PositiveInt = 5
    last_evals: PositiveInt = 2
    experiment: ExperimentConfig = Field(default_factory=_experiment)
    # 6e-3 was tried first: the reversed arm's dev run stalled at 4% after 800 steps
    lr_candidates: list[PositiveFloat] = Field(default_factory=lambda: [3e-3, 1e-3], min_length=1)
    lrs: dict[str, PositiveFloat] = Field(default_factory=dict)
    workers: PositiveInt = 2

    @model_validator(mode="after")
    def _check(self) -> ArithmeticStudy:
        if unknown := sorted(set(self.lrs) - set(ARMS)):
            raise ValueError(f"lrs: unknown arms {unknown}; arms are {list(ARMS)}")
        if getattr(self.experiment.data.task, "dev_fraction", 0.0) <= 0.0:
            raise ValueError(
                "experiment.data.task.dev_fraction must be > 0: the learning rates are chosen "
                "on the dev split"
            )
        return self


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
        "order (held-out exact match, same steps, each arm at its dev-chosen lr)",
    ),
    Claim(
        "reversed-learns",
        "reversed",
        0.90,
        "exact_match",
        "higher",
        scale=100,
        unit=" pt",
        text="the reversed-answer decoder gets over 90% of held-out sums right",
    ),
]


def arm_experiment(
    config: ArithmeticStudy, arm: str, *, lr: float | None = None, split: str = "held_out"
) -> ExperimentConfig:
    """The experiment of one arm: the base with the arm's answer order, its learning rate
    (``lr``, else the one chosen in ``config.lrs``, else the base's) and the evaluated split."""
    exp = config.experiment
    task = exp.data.task.model_copy(update={"reverse_answer": ARMS[arm]})
    lr = lr if lr is not None else config.lrs.get(arm, exp.train.optimizer.lr)
    optimizer = exp.train.optimizer.model_copy(update={"lr": lr})
    return exp.model_copy(
        update={
            "data": exp.data.model_copy(update={"task": task}),
            "train": exp.train.model_copy(update={"optimizer": optimizer}),
            "eval": exp.eval.model_copy(update={"split": split}),
        }
    )


def check_splits(config: ArithmeticStudy) -> dict[str, int]:
    """The dev and held-out (test) problems: every one distinct, the two splits disjoint and
    neither trained on. Returns the size of each split.

    Raises:
        ValueError: a problem in two splits (names the splits and a problem).
    """
    from splice.training.experiment import build_task

    task = build_task(config.experiment.data.task)
    prompts = {s: [ex.prompt for ex in task.all_examples(s)] for s in ("train", "dev", "held_out")}
    for split, got in prompts.items():
        if len(set(got)) != len(got):
            raise ValueError(f"arithmetic: the {split} split repeats a problem")
    for a, b in (("dev", "held_out"), ("dev", "train"), ("held_out", "train")):
        if both := set(prompts[a]) & set(prompts[b]):
            raise ValueError(f"arithmetic: {sorted(both)[:3]} are in both {a} and {b}")
    return {s: len(p) for s, p in prompts.items()}


def run_one(config: ArithmeticStudy, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One reported run: the arm at its chosen learning rate, scored on the held-out split."""
    return run_arm(arm_experiment(config, arm), config, seed=seed, folder=folder)


def dev_run(config: ArithmeticStudy, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One tuning run: ``arm`` at ``lr`` on tuning seed ``seed``, scored on the dev split."""
    i = config.lr_candidates.index(lr)
    folder = Path(config.run_dir()) / "tuning" / f"{arm}-lr{i}" / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    exp = arm_experiment(config, arm, lr=lr, split="dev")
    return run_arm(exp, config, seed=seed, folder=folder)


def choose_lrs(config: ArithmeticStudy) -> list[Tuning]:
    """Each arm's learning rate, chosen on the dev split by the tuning seeds (the runs go in
    ``config.workers`` processes): highest mean dev exact match, ties to the first listed."""
    return tune_in_workers(
        functools.partial(dev_run, config),
        {arm: config.lr_candidates for arm in ARMS},
        metric="exact_match",
        seeds=config.tuning_seeds,
        workers=config.workers,
    )


def study_arms(config: ArithmeticStudy) -> list[str]:
    """The arms, in the order each seed runs them."""
    return list(ARMS)


#: every arm of one seed: one worker's share (module-level, so it reaches the workers)
run_seed = functools.partial(every_arm, run_one, study_arms)


def run(config: ArithmeticStudy) -> dict[str, Any]:
    """Choose each arm's learning rate on the dev split, run both arms over the seeds, print
    each claim's verdict."""
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    sizes = check_splits(config)
    tunings = choose_lrs(config)
    chosen = with_chosen(config, "lrs", tunings)
    for t in tunings:
        print(f"{t.name}: lr {t.value:g} chosen on the dev split "
              f"(dev exact match {t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip

    def notes(result: StudyResult) -> list[str]:
        return [
            f"{arm} (lr {chosen.lrs[arm]:g}): held-out exact match {iv.mean:.1%} "
            f"(+- {iv.half_width:.1%}) over {iv.n} seeds"
            for arm in ARMS
            for iv in [result.interval(arm, "exact_match")]
        ]

    return run_and_report(
        chosen,
        arms=list(ARMS),
        run_one=seeds_in_workers(
            run_seed, chosen, lambda arm, seed, folder: run_one(chosen, arm, seed, folder)
        ),
        claims=CLAIMS,
        extras=lambda _: {
            "splits": sizes,
            **tuning_extras(tunings, scale=100, unit="%"),
        },
        clock=clock,
        show=("dev_choice",),
        notes=notes,
    )


def config() -> ArithmeticStudy:
    return ArithmeticStudy()


recipe = Recipe(
    name="arithmetic",
    description="2-layer decoder learns 1-2 digit addition, answer reversed vs plain, each "
    "arm's lr chosen on a dev split, over seeds; held-out exact match with intervals",
    config=config,
    run=run,
)
