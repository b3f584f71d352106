"""The ``arithmetic`` study: registered, valid, and runnable end to end at a few steps
(plumbing, not accuracy)."""

from __future__ import annotations

import json

from splice.cli import main
from splice.cli.run import load_recipe
from splice_recipes.arithmetic import ArithmeticStudy, arm_experiment
from splice_recipes.study import StudyResult


def test_recipe_is_registered_and_its_config_is_valid():
    recipe = load_recipe("arithmetic")
    cfg = recipe.config()
    assert isinstance(cfg, ArithmeticStudy)
    assert cfg.precision == "float32" and cfg.seeds == 3
    assert cfg.experiment.model.block.token_mixer.type == "mha"  # splice-mha attention
    assert arm_experiment(cfg, "reversed").data.task.reverse_answer is True
    assert arm_experiment(cfg, "plain").data.task.reverse_answer is False
    assert ArithmeticStudy.model_validate_json(cfg.model_dump_json()) == cfg


def test_study_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "seeds": 2,
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
