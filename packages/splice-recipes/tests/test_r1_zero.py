"""The ``r1-zero`` study: registered, valid, its task mostly answers directly, and runnable
end to end at a tiny size (plumbing: claims, study files, the figure; the verdicts come
from the full run)."""

from __future__ import annotations

import json

from splice.cli import main
from splice.cli.run import load_recipe
from splice.data.arithmetic import ArithmeticTask
from splice_recipes.r1_zero import (
    WORKED,
    R1ZeroConfig,
    addition,
    claims,
    grpo_config,
    reasons,
    run_one,
    sft_config,
)
from splice_recipes.study import StudyResult


def test_recipe_is_registered_and_its_config_is_valid():
    cfg = load_recipe("r1-zero").config()
    assert isinstance(cfg, R1ZeroConfig)
    assert R1ZeroConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert cfg.seeds >= 5 and cfg.precision == "float32"
    assert cfg.arms() == ["sft", "grpo-beta-0", "grpo-beta-small", "grpo-beta-large"]
    sft = sft_config(cfg, 3, "x")
    assert sft.data.task.type == "mixture" and sft.seed == 3
    assert sft.train.precision == "float32"
    grpo = grpo_config(cfg, 0.0, init_from="x", seed=3)
    assert grpo.objective.type == "grpo" and grpo.objective.beta == 0.0
    assert grpo.train.precision == "float32"
    assert [c.name for c in claims(cfg)] == ["accuracy", "length", "reasoning", "retention"]
    # the longest reasoning completion (99999+99999) fits the generation budget and context
    task = ArithmeticTask("+", min_digits=5, max_digits=5, chain_of_thought=True)
    longest = task.format(99999, 99999)
    assert len(longest.completion) + 1 <= grpo.rollout.max_new_tokens
    assert len(longest.prompt) + len(longest.completion) + 2 <= cfg.max_len


def test_the_start_mostly_answers_directly_and_the_second_skill_is_large():
    cfg = R1ZeroConfig()
    task = cfg.grpo_task  # five-digit addition: 20% of the start's `=` examples reason
    assert task == addition() and task["min_digits"] == task["max_digits"] == 5
    add = ArithmeticTask("+", min_digits=5, max_digits=5, chain_of_thought=True,
                         reasoning_share=task["reasoning_share"])  # fmt: skip
    examples = add.sample("train", 400)
    share = sum(reasons([], [e.completion for e in examples], [])) / len(examples)
    assert 0.15 < share < 0.25
    assert all(e.completion.startswith("<think></think>") or "=" in e.completion for e in examples)
    plain = ArithmeticTask("+", min_digits=5, max_digits=5, chain_of_thought=True)
    assert [e.prompt for e in plain.sample("train", 50)] == [e.prompt for e in examples[:50]]
    # worked solutions under their own cue: the same problems, always reasoned
    worked = ArithmeticTask("+", min_digits=5, max_digits=5, chain_of_thought=True,
                            separator=":")  # fmt: skip
    assert worked.format(12345, 56789).prompt == "12345+56789:"
    assert cfg.sft_task["tasks"][1] == WORKED and WORKED["reasoning_share"] == 1.0
    # the second skill: two-digit addition, always answered directly, in the same format;
    # over 200 distinct held-out problems, none of them a GRPO prompt
    assert cfg.retention_task == addition(reasoning_share=0.0, digits=2)
    sub = ArithmeticTask("+", min_digits=2, max_digits=2, chain_of_thought=True,
                         reasoning_share=0.0)  # fmt: skip
    held = sub.sample("held_out", 2000)
    assert len({e.prompt for e in held}) >= 200
    trained = sub.sample("train", 200)  # what SFT shows (evaluation reads the answer only)
    assert not any(reasons([], [e.completion for e in trained], []))
    assert cfg.sft_task["tasks"] == [task, WORKED, cfg.retention_task]


def test_reasons_reads_a_non_empty_think_block():
    got = reasons(
        [], ["<think>7+5=12</think><answer>12</answer>", "<think></think><answer>12</answer>",
             "12", "<think>"], []
    )  # fmt: skip
    assert got == [1.0, 0.0, 0.0, 0.0]


def test_study_runs_with_overrides(tmp_path, capsys, r1_tiny, cli_args):
    out = tmp_path / "run"
    # start=train: 4 SFT steps are not the shipped start (test_r1_shipped runs that path)
    assert main(cli_args("r1-zero", out, {**r1_tiny, "start": "train"})) == 0
    printed = capsys.readouterr().out
    assert "GRPO raises held-out accuracy over the SFT start" in printed
    assert "a large KL weight keeps more of the second skill than none" in printed
    assert "accuracy β large costs against β 0" in printed
    assert printed.count("start seed") == 2 and "forced reasoning" in printed
    result = StudyResult.load(out / "study.json")
    assert [c.claim.name for c in result.claims] == ["accuracy", "length", "reasoning", "retention"]
    assert all(c.verdict in ("shown", "not shown") and c.interval.n == 2 for c in result.claims)
    curves = result.extras["curves"]
    assert set(curves) == {"0", "small", "large"}
    assert [p[0] for p in curves["small"]["acc"]] == [0.0, 1.0, 2.0]  # SFT start, then steps
    assert curves["large"]["kl"] and not curves["0"]["kl"]  # β = 0 has no reference
    assert (out / "r1_zero.png").stat().st_size > 0 and (out / "report.md").is_file()
    assert (out / "grpo-beta-small" / "seed-1" / "checkpoints").is_dir()
    # the SFT start's curve (every seed at each evaluation) and the study's CPU seconds
    assert [p[0] for p in result.extras["sft_curve"]["acc"]] == [4.0]
    assert result.cpu_time_s > 0 and "CPU s" in printed
    # the start's probes: the reasoning mode forced open, P(reasoning) when sampling
    for start in result.figures["sft"].values():
        assert 0.0 <= start["forced"] <= 1.0 and 0.0 < start["p_reason"] < 1.0
    # two seeds ran in two worker processes (the default); a run's figures depend only on
    # its seed: the SFT start of seed 1 again, in this process, gives the same figures
    cfg = R1ZeroConfig.model_validate(json.loads((out / "config.json").read_text()))
    assert cfg.workers == 2
    again = run_one(cfg, "sft", 1, tmp_path / "again")
    assert again == result.figures["sft"][1]
