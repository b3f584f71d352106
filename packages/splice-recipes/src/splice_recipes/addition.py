"""Recipe ``addition``: the standard training run of a small dense decoder learning addition
from scratch, repeated over seeds as a small study (the ``arithmetic`` study compares answer
orders with the same run).

Each seed is one ``run_experiment`` run, so it checkpoints, resumes (``--resume``) and runs
under torchrun like any experiment. A 2-layer, d=128 decoder (splice-mha attention, RoPE,
pre-norm) is trained with SFT on the built-in arithmetic task: ``a+b=`` with 1-2 digit
operands, the answer written least-significant digit first (``37+25=`` -> ``26``), the order
in which carries are computed, which a left-to-right decoder learns much faster. Every
held-out problem (a hash-based 10% of all operand pairs, never trained on) is answered
greedily once per evaluation and scored by exact match; a run's result is the mean of its
last evaluations. The claim: the decoder gets over ``bar`` (90%) of the held-out sums right,
judged on the seeds' interval.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, confloat
from splice.recipe import Recipe
from splice.training.configs import ExperimentConfig

from splice_recipes.study import (
    Claim,
    StudyConfig,
    StudyResult,
    every_arm,
    mean_of_last_evals,
    pinned,
    run_and_report,
    seeds_in_workers,
)

ARM = "reversed_sft"


def experiment() -> ExperimentConfig:
    """One run: 2000 optimizer steps of 64 problems, every held-out problem scored every 200
    steps (the split holds ~1,000; asking for more gives each once). At 1200 steps one seed
    in four (seed 2) had not converged (32% held out, still rising); alone for 2000 steps it
    reached 95%, so the run is 2000 steps long (about 63 CPU s a seed)."""
    return ExperimentConfig(
        name="addition",
        seed=0,
        model={
            "type": "decoder",
            "vocab_size": 52,
            "d_model": 128,
            "n_layers": 2,
            "max_seq_len": 16,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 4},
                "channel_mixer": {"type": "mlp", "multiple": 4.0},
            },
        },
        data={
            "task": {
                "type": "arithmetic",
                "op": "+",
                "min_digits": 1,
                "max_digits": 2,
                "reverse_answer": True,
            },
            "max_len": 16,
        },
        train={
            "steps": 2000,
            "batch_size": 64,
            "log_every": 50,
            "checkpoint_every": 500,
            "keep_last": 1,
            "num_threads": 1,
            "optimizer": {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.98]},
            "schedule": {"kind": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.05},
        },
        eval={"every": 200, "loss_batches": 4, "exact_match_examples": 2000, "max_new_tokens": 6},
    )


class AdditionStudy(StudyConfig):
    """The study: ``experiment`` run once per seed (its seed, precision and folder are set by
    the study: ``<study>/reversed_sft/seed-<s>``).

    Attributes:
        experiment: the training run (``--set experiment.train.steps=...``).
        bar: the held-out exact match (a fraction) the claim says a run clears.
        workers: seeds run at once, one process each (every run uses one thread; the figures
            do not depend on it). Under torchrun the seeds run one after another instead,
            every rank taking part in each.
    """

    name: str = "addition"
    seeds: PositiveInt = 4  # two rounds of 2 workers
    last_evals: PositiveInt = 2
    experiment: ExperimentConfig = Field(default_factory=experiment)
    bar: confloat(ge=0.0, le=1.0) = 0.90  # type: ignore[valid-type]
    workers: PositiveInt = 2


def claims(config: AdditionStudy) -> list[Claim]:
    return [
        Claim(
            "learns-addition",
            ARM,
            config.bar,
            "exact_match",
            "higher",
            scale=100,
            unit=" pt",
            text=f"the decoder gets over {config.bar:.0%} of held-out sums right",
        )
    ]


def run_one(
    config: AdditionStudy,
    arm: str,
    seed: int,
    folder: Path,
    *,
    resume: bool | Literal["auto"] = False,
    overwrite: bool = False,
    allow_config_change: Sequence[str] = (),
) -> dict[str, float]:
    """One seed's ``run_experiment`` (resumed or overwritten as asked), read as the mean of
    its last ``config.last_evals`` evaluations."""
    from splice.training.experiment import run_experiment

    run = pinned(config.experiment, config, seed=seed, folder=folder)
    report = run_experiment(
        run, resume=resume, overwrite=overwrite, allow_config_change=allow_config_change
    )
    m = folder / "metrics.jsonl"
    return {
        "exact_match": mean_of_last_evals(m, "exact_match", config.last_evals),
        "eval_loss": mean_of_last_evals(m, "eval_loss", config.last_evals),
        "ms_per_step": 1000.0 * float(report["train_time_s"]) / max(int(report["steps"]), 1),
        "final_train_loss": float(report["final_train_loss"]),
    }


def study_arms(config: AdditionStudy) -> list[str]:
    return [ARM]


def run(
    config: AdditionStudy,
    *,
    resume: bool | Literal["auto"] = False,
    overwrite: bool = False,
    allow_config_change: Sequence[str] = (),
) -> dict[str, Any]:
    """Train every seed's run (``resume``, ``overwrite`` and ``allow_config_change`` are
    ``run_experiment``'s, applied to each seed's run); print the held-out exact match and the
    claim's verdict."""
    flags = {"resume": resume, "overwrite": overwrite, "allow_config_change": allow_config_change}
    one = functools.partial(run_one, **flags)  # module-level function: reaches the workers
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:  # every rank takes part in each seed's run; rank 0 writes the study
        config = config.model_copy(update={"workers": 1, "progress": False})
        if int(os.environ.get("RANK", "0")) != 0:
            for seed in config.seed_list():
                one(config, ARM, seed, config.arm_dir(ARM, seed))
            return {"run_dir": config.run_dir()}

    def notes(result: StudyResult) -> list[str]:
        iv = result.interval(ARM, "exact_match")
        return [
            f"held-out exact match {iv.mean:.1%} (+- {iv.half_width:.1%}) over {iv.n} seeds, "
            f"every held-out problem once per evaluation, the mean of the last "
            f"{config.last_evals} evaluations"
        ]

    for_seed = functools.partial(every_arm, one, study_arms)
    return run_and_report(
        config,
        arms=[ARM],
        run_one=seeds_in_workers(
            for_seed, config, lambda arm, seed, folder: one(config, arm, seed, folder)
        ),
        claims=claims(config),
        notes=notes,
    )


def config() -> AdditionStudy:
    return AdditionStudy()


recipe = Recipe(
    name="addition",
    description="the standard run (resumable, torchrun-able) of a 2-layer decoder learning 1-2 "
    "digit addition, over seeds; held-out exact match against a 90% bar",
    config=config,
    run=run,
)
