"""The ``ppo`` recipe: registered, valid, built on ``r1-zero``'s task and SFT, and runnable
end to end at a tiny size (plumbing: the table and report; the figures come from the full
run, pasted in docs/concepts/ppo.md)."""

from __future__ import annotations

import json

from splice.cli import main
from splice.cli.run import load_recipe
from splice_recipes import r1_zero
from splice_recipes.ppo import PPORecipeConfig, ppo_config


def test_recipe_is_registered_and_shares_r1_zero_task():
    cfg = load_recipe("ppo").config()
    assert isinstance(cfg, PPORecipeConfig)
    assert PPORecipeConfig.model_validate_json(cfg.model_dump_json()) == cfg
    exp = ppo_config(cfg, init_from="x")
    assert exp.objective.type == "ppo" and exp.objective.critic == "shared"
    assert [t.label for t in exp.objective.rewards] == ["accuracy", "format", "reasoning"]
    r1 = r1_zero.R1ZeroConfig()
    assert exp.data.task == r1_zero.grpo_config(r1, 0.0, init_from="x").data.task
    assert exp.model == r1.model and exp.init_from == "x"


def test_recipe_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "task.sft.steps": 6,
        "task.sft.progress": False,
        "task.eval_examples": 4,
        "task.eval_every": 1,
        "ppo.steps": 2,
        "ppo.progress": False,
        "rollout.prompts_per_step": 2,
        "objective.minibatch_size": 2,
    }
    args = ["run", "ppo", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| method | acc before | acc after | Δ | train time (s)" in printed
    report = json.loads((out / "ppo.json").read_text())
    assert [r["method"] for r in report["rows"]] == ["SFT (6 steps)", "PPO (2 steps)"]
    assert (out / "ppo.md").is_file() and (out / "ppo" / "checkpoints").is_dir()
    saved = out / "ppo" / "checkpoints" / "step-000002" / "objective.safetensors"
    assert saved.is_file()  # the value head is checkpointed with the policy
