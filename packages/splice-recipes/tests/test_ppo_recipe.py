"""The ``ppo`` study: registered, valid, built on ``r1-zero``'s task and SFT, PPO and GRPO
at equal generated samples, and runnable end to end at a tiny size (plumbing: claims and
study files; the verdicts come from the full run)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from splice.cli import main
from splice.cli.run import load_recipe
from splice_recipes import r1_zero
from splice_recipes.ppo import PPOStudyConfig, ppo_config
from splice_recipes.study import StudyResult


def test_recipe_is_registered_and_shares_r1_zero_task():
    cfg = load_recipe("ppo").config()
    assert isinstance(cfg, PPOStudyConfig)
    assert PPOStudyConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert cfg.seeds >= 5 and cfg.arms() == ["sft", "grpo", "ppo"]
    exp = ppo_config(cfg, init_from="x")
    assert exp.objective.type == "ppo" and exp.objective.critic == "shared"
    assert exp.objective.kl_coef == cfg.beta and exp.train.precision == "float32"
    assert [t.label for t in exp.objective.rewards] == ["accuracy", "format", "reasoning"]
    grpo = r1_zero.grpo_config(cfg, cfg.beta, init_from="x")
    assert exp.data.task == grpo.data.task and exp.model == grpo.model
    # equal generated samples per step, and as many steps
    per_step = exp.rollout.prompts_per_step * exp.objective.samples_per_prompt
    assert per_step == grpo.rollout.prompts_per_step * grpo.objective.group_size
    assert exp.train.steps == grpo.train.steps


def test_unequal_samples_are_refused():
    with pytest.raises(ValidationError, match="GRPO generates 128 completions per step"):
        PPOStudyConfig(ppo_rollout={"prompts_per_step": 16})


def test_study_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "seeds": 2,
        "progress": False,
        "start": "train",
        "sft.steps": 4,
        "grpo.steps": 2,
        "ppo.steps": 2,
        "rollout.prompts_per_step": 2,
        "grpo_objective.group_size": 2,
        "ppo_rollout.prompts_per_step": 1,
        "objective.minibatch_size": 4,
        "eval_examples": 4,
        "eval_every": 1,
    }
    args = ["run", "ppo", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "PPO raises held-out accuracy over the SFT start" in printed
    assert "GRPO ends above PPO at equal generated samples" in printed
    result = StudyResult.load(out / "study.json")
    assert [c.claim.name for c in result.claims] == ["ppo-accuracy", "grpo-vs-ppo"]
    assert all(c.interval.n == 2 for c in result.claims)
    assert result.cpu_time_s > 0  # the study's cost, counted in its worker processes
    saved = out / "ppo" / "seed-1" / "checkpoints" / "step-000002" / "objective.safetensors"
    assert saved.is_file()  # the value head is checkpointed with the policy
