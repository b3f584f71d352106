"""The ``arithmetic`` study: registered, valid, and runnable end to end at a few steps
(plumbing, not accuracy)."""

from __future__ import annotations

import json

import pytest
from splice.cli import main
from splice.cli.run import load_recipe
from splice.training.experiment import build_task
from splice_recipes.arithmetic import ArithmeticStudy, arm_experiment, check_splits
from splice_recipes.study import StudyResult


def test_recipe_is_registered_and_its_config_is_valid():
    recipe = load_recipe("arithmetic")
    cfg = recipe.config()
    assert isinstance(cfg, ArithmeticStudy)
    assert cfg.precision == "float32" and cfg.seeds == 5 and cfg.workers == 2
    assert cfg.experiment.model.block.token_mixer.type == "mha"  # splice-mha attention
    assert arm_experiment(cfg, "reversed").data.task.reverse_answer is True
    assert arm_experiment(cfg, "plain").data.task.reverse_answer is False
    assert arm_experiment(cfg, "plain", lr=1e-4, split="dev").train.optimizer.lr == 1e-4
    assert arm_experiment(cfg, "plain", split="dev").eval.split == "dev"
    chosen = cfg.model_copy(update={"lrs": {"plain": 2e-3}})
    assert arm_experiment(chosen, "plain").train.optimizer.lr == 2e-3
    assert arm_experiment(chosen, "plain").eval.split == "held_out"
    assert ArithmeticStudy.model_validate_json(cfg.model_dump_json()) == cfg


def test_dev_and_test_problems_are_distinct_disjoint_and_never_trained_on():
    cfg = ArithmeticStudy()
    sizes = check_splits(cfg)
    assert 900 < sizes["dev"] < 1100 and 900 < sizes["held_out"] < 1100  # ~10% of 10,000 each
    task = build_task(cfg.experiment.data.task)
    dev = {ex.prompt for ex in task.sample("dev", 5000)}
    test = {ex.prompt for ex in task.sample("held_out", 5000)}
    train = {ex.prompt for ex in task.sample("train", 20000)}
    assert len(dev) == sizes["dev"] and len(test) == sizes["held_out"]  # every one, once
    assert not dev & test and not dev & train and not test & train


def test_tuning_seeds_must_not_be_reported_and_a_dev_split_is_needed():
    with pytest.raises(ValueError, match="tuning_seeds"):
        ArithmeticStudy(seeds=3, tuning_seeds=[2])
    with pytest.raises(ValueError, match="lrs"):
        ArithmeticStudy(lrs={"sideways": 1e-3})
    exp = ArithmeticStudy().experiment
    no_dev = exp.model_copy(
        update={
            "data": exp.data.model_copy(
                update={"task": {**exp.data.task.model_dump(), "dev_fraction": 0.0}}
            )
        }
    )
    with pytest.raises(ValueError, match="dev_fraction"):
        ArithmeticStudy.model_validate({"experiment": no_dev.model_dump()})


def test_study_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "seeds": 2,
        "workers": 1,
        "lr_candidates": "[0.003,0.001]",
        "progress": "false",
        "last_evals": 2,
        "experiment.train.steps": 4,
        "experiment.train.batch_size": 8,
        "experiment.train.checkpoint_every": 4,
        "experiment.eval.every": 2,
        "experiment.eval.exact_match_examples": 5,
        "experiment.eval.loss_batches": 1,
        "experiment.model.d_model": 32,
        "experiment.model.n_layers": 1,
    }
    args = ["run", "arithmetic", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "answer written least-significant digit first beats the usual order" in printed
    assert "NOT SHOWN" in printed or "SHOWN" in printed
    study = StudyResult.load(out)
    assert study.seeds == [0, 1] and set(study.figures) == {"reversed", "plain"}
    assert study.environment["precision"] == "float32"
    for arm in ("reversed", "plain"):
        for seed in (0, 1):
            run = out / arm / f"seed-{seed}"
            saved = json.loads((run / "config.json").read_text())
            assert saved["seed"] == seed and saved["train"]["precision"] == "float32"
            assert saved["data"]["task"]["reverse_answer"] is (arm == "reversed")
            evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            ems = [r["exact_match"] for r in evals if r["kind"] == "eval"]
            assert len(ems) == 2  # steps 2 and 4
            assert study.figures[arm][seed]["exact_match"] == sum(ems) / 2
    assert (out / "reversed-beats-plain.png").is_file() and (out / "report.md").is_file()
    # each arm's lr was chosen on the dev split by tuning seed 100, and the arm ran with it
    tunings = {t["name"]: t for t in study.extras["tuning"]}
    assert set(tunings) == {"reversed", "plain"} and study.extras["splits"]["dev"] > 0
    for arm, t in tunings.items():
        assert t["seeds"] == [100] and t["candidates"] == [0.003, 0.001]
        for i in range(2):
            dev_run = out / "tuning" / f"{arm}-lr{i}" / "seed-100"
            assert json.loads((dev_run / "config.json").read_text())["eval"]["split"] == "dev"
        saved = json.loads((out / arm / "seed-0" / "config.json").read_text())
        assert saved["train"]["optimizer"]["lr"] == t["value"]
        assert saved["eval"]["split"] == "held_out"
