"""The ``r1-zero`` recipe: registered, valid, and runnable end to end at a tiny size
(plumbing: the table, plot and report; the accuracy figures come from the full run)."""

from __future__ import annotations

import json

from splice.cli import main
from splice.cli.run import load_recipe
from splice_recipes.r1_zero import R1ZeroConfig, grpo_config, markdown_table, sft_config


def test_recipe_is_registered_and_its_config_is_valid():
    cfg = load_recipe("r1-zero").config()
    assert isinstance(cfg, R1ZeroConfig)
    assert R1ZeroConfig.model_validate_json(cfg.model_dump_json()) == cfg
    sft = sft_config(cfg)
    assert sft.data.task.type == "mixture" and sft.objective.type == "sft"
    grpo = grpo_config(cfg, 0.0, init_from="x")
    assert grpo.objective.type == "grpo" and grpo.objective.beta == 0.0
    assert grpo.data.task.chain_of_thought and grpo.rollout.max_new_tokens >= 52
    # the longest completion (99+99) fits the generation budget
    ex = grpo.data.task.model_dump()
    from splice.data.arithmetic import ArithmeticTask

    longest = ArithmeticTask("+", max_digits=ex["max_digits"], chain_of_thought=True).format(99, 99)
    assert len(longest.completion) + 1 <= grpo.rollout.max_new_tokens


def test_recipe_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "sft.steps": 6,
        "sft.progress": False,
        "grpo.steps": 2,
        "grpo.progress": False,
        "rollout.prompts_per_step": 2,
        "grpo_objective.group_size": 2,
        "eval_examples": 4,
        "eval_every": 1,
        "betas": [0.1, 0.0],
    }
    args = ["run", "r1-zero", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| method | acc before | acc after | Δ | train time (s)" in printed
    report = json.loads((out / "r1_zero.json").read_text())
    assert [r["method"] for r in report["rows"]] == [
        "SFT (6 steps)",
        "GRPO β=0.1 (2 steps)",
        "GRPO β=0 (2 steps)",
    ]
    assert (out / "r1_zero.png").stat().st_size > 0 and (out / "r1_zero.md").is_file()
    assert (out / "grpo-beta0.1" / "checkpoints").is_dir()


def test_markdown_table_rows():
    s = {"acc": 0.5, "format": 1.0, "sub": 0.4, "length": 40.0}
    t = {"acc": 0.7, "format": 1.0, "sub": 0.3, "length": 41.0}
    table = markdown_table(
        [
            {
                "method": "GRPO",
                "before": s,
                "after": t,
                "train_time_s": 12.0,
                "length_first": 40.0,
                "length_last": 41.5,
            }
        ]
    )
    assert (
        "| GRPO | 50.0% | 70.0% | +20.0 | 12 | 100.0% | 100.0% | 40.0% | 30.0% | 40.0 → 41.5 |"
        in table
    )
