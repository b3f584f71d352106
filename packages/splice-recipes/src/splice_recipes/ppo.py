"""Recipe ``ppo``: PPO against GRPO on the ``r1-zero`` task, at equal generated samples,
as a study over seeds.

Same model, tokenizer, tasks, SFT start, rewards and held-out evaluation as ``r1-zero``
(``splice_recipes.r1_zero``, reused here, not copied). Per seed, from that seed's SFT
start (arm ``sft``): GRPO (arm ``grpo``: ``P`` prompts x ``G`` completions per step, the
group's mean reward as the baseline) and PPO (arm ``ppo``: ``2P`` prompts x ``G/2``
samples, a value head on the policy trunk, GAE and a per-token KL penalty), both for the
same number of steps with the same number of completions generated per step and the same
KL weight. Claims (95% paired intervals over seeds): PPO raises held-out accuracy over
the SFT start; GRPO ends above PPO at equal generated samples.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeFloat, model_validator
from splice.recipe import Recipe
from splice.training.configs import DataConfig, ExperimentConfig, RolloutConfig, TrainConfig

from splice_recipes import r1_zero as r1
from splice_recipes.rl_study import RETENTION_TASK, figures
from splice_recipes.study import Claim, StudyResult, arms_in_workers, every_arm

SFT_ARM, GRPO_ARM, PPO_ARM = "sft", "grpo", "ppo"


def _default_objective() -> dict[str, Any]:
    return {
        "type": "ppo",
        "rewards": r1.REWARDS,
        "samples_per_prompt": 4,
        "critic": "shared",
        "value_lr_scale": 1.0,
        "gamma": 1.0,
        # lambda = 1: advantages are return minus value (with lambda < 1 and a critic that
        # starts at 0, whitening pushed every completion's first tokens down)
        "lam": 1.0,
        "epochs": 2,
        "minibatch_size": 128,
        "target_kl": 0.05,
    }


class PPOStudyConfig(r1.R1ZeroConfig):
    """``r1-zero``'s task, SFT, GRPO and evaluation (``betas`` holds the one KL weight
    both methods use), plus the PPO run.

    Attributes:
        ppo / objective: PPO's trainer settings and objective (``kl_coef`` is set to the
            GRPO arm's β).
        ppo_rollout: PPO's sampling; ``prompts_per_step x samples_per_prompt`` must equal
            GRPO's ``prompts_per_step x group_size`` (equal generated samples).
    """

    name: str = "ppo"
    betas: dict[str, NonNegativeFloat] = Field(default_factory=lambda: {"small": 0.02})
    # r1-zero's GRPO trainer: the same steps and policy rate (for the value head too,
    # value_lr_scale below); batch_size is unused by online runs
    ppo: TrainConfig = Field(default_factory=r1.default_grpo_train)
    objective: dict[str, Any] = Field(default_factory=_default_objective)
    ppo_rollout: RolloutConfig = RolloutConfig(
        prompts_per_step=32, max_new_tokens=84, temperature=0.7
    )

    @model_validator(mode="after")
    def _equal_samples(self) -> PPOStudyConfig:
        if len(self.betas) != 1:
            raise ValueError(f"betas: the ppo study uses one KL weight, got {self.betas}")
        grpo = self.rollout.prompts_per_step * int(self.grpo_objective.get("group_size", 8))
        ppo = self.ppo_rollout.prompts_per_step * int(self.objective.get("samples_per_prompt", 4))
        if grpo != ppo or self.grpo.steps != self.ppo.steps:
            raise ValueError(
                f"GRPO generates {grpo} completions per step for {self.grpo.steps} steps, PPO "
                f"{ppo} for {self.ppo.steps}: set ppo_rollout.prompts_per_step, "
                "objective.samples_per_prompt or ppo.steps so both generate as many"
            )
        return self

    def arms(self) -> list[str]:
        return [SFT_ARM, GRPO_ARM, PPO_ARM]

    @property
    def beta(self) -> float:
        return next(iter(self.betas.values()))


def ppo_config(config: PPOStudyConfig, init_from: str) -> ExperimentConfig:
    """The PPO run from ``init_from``: GRPO's run with the PPO objective, trainer and sampling."""
    return ExperimentConfig(
        name=f"{config.name}-ppo",
        model=config.model,
        tokenizer=config.tokenizer,
        data=DataConfig(task=config.grpo_task, max_len=config.max_len),
        objective={**config.objective, "kl_coef": config.beta},
        train=config.ppo.model_copy(update={"precision": config.precision}),
        rollout=config.ppo_rollout,
        eval=r1.held_out_eval(
            config, every=config.eval_every, tasks={RETENTION_TASK: config.retention_task}
        ),
        init_from=init_from,
        output_dir=str(Path(config.run_dir()) / "ppo"),
    )


def run_one(config: PPOStudyConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One arm for one seed; GRPO and PPO start from the seed's SFT run (run first)."""
    if arm == SFT_ARM:
        return r1.run_one(config, SFT_ARM, seed, folder)
    if arm == GRPO_ARM:
        return r1.run_one(config, r1.grpo_arm(next(iter(config.betas))), seed, folder)
    from splice.training.experiment import run_experiment

    from splice_recipes.study import pinned

    exp = ppo_config(config, r1.start_weights(config, seed))
    run_experiment(pinned(exp, config, seed=seed, folder=folder), overwrite=True)
    return figures(folder, config.last_evals)


#: every arm of one seed, in order (the start first), in one process: the sequential form
#: of what ``run`` hands to ``arms_in_workers`` one arm at a time
run_seed = functools.partial(every_arm, run_one, PPOStudyConfig.arms)


def claims() -> list[Claim]:
    return [
        Claim("ppo-accuracy", PPO_ARM, SFT_ARM, "acc", "higher", scale=100, unit=" pt",
              text="PPO raises held-out accuracy over the SFT start"),
        Claim("grpo-vs-ppo", GRPO_ARM, PPO_ARM, "acc", "higher", scale=100, unit=" pt",
              text="GRPO ends above PPO at equal generated samples"),
    ]  # fmt: skip


def arm_lines(result: StudyResult, config: PPOStudyConfig) -> list[str]:
    """Each arm's accuracy, retention and length (mean ± half-width over seeds)."""
    lines = []
    for arm in config.arms():
        acc, ret = result.interval(arm, "acc"), result.interval(arm, "retention")
        lines.append(
            f"  {arm:<5} accuracy {100 * acc.mean:5.1f} ± {100 * acc.half_width:.1f}  "
            f"retention {100 * ret.mean:5.1f} ± {100 * ret.half_width:.1f}  "
            f"length {result.interval(arm, 'length').mean:5.1f}"
        )
    return lines


def run(config: PPOStudyConfig) -> dict[str, Any]:
    """SFT, GRPO and PPO for every seed; prints each claim with its interval and verdict."""
    from splice_recipes.study import claim_lines, run_study, summary

    # the first call runs every arm of every seed in the worker processes, inside the
    # study's clock: each seed's start first, its other arms as soon as it is written
    one = arms_in_workers(run_one, config)

    result = run_study(
        config,
        arms=config.arms(),
        run_one=one,
        claims=claims(),
    )
    for line in [*claim_lines(result), *arm_lines(result, config)]:
        print(line)
    print(f"wall {result.wall_time_s:.0f} s, {result.cpu_time_s or 0:.0f} CPU s")
    return summary(result, config.run_dir())


def config() -> PPOStudyConfig:
    return PPOStudyConfig()


recipe = Recipe(
    name="ppo",
    description="PPO against GRPO on the r1-zero task at equal generated samples, over seeds: "
    "accuracy over the SFT start, GRPO minus PPO",
    config=config,
    run=run,
)
