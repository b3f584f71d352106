"""The ``addition`` recipe: registered, valid, a study over seeds whose runs are standard
experiments (checkpointed, resumable), runnable end to end (plumbing, not accuracy)."""

from __future__ import annotations

import json

import pytest
from splice.cli import main
from splice.cli.run import load_recipe
from splice.training.configs import ExperimentConfig
from splice_recipes.addition import ARM, AdditionStudy
from splice_recipes.study import StudyResult

TINY = {
    "seeds": 2,
    "workers": 1,
    "progress": "false",
    "experiment.train.steps": 4,
    "experiment.train.batch_size": 8,
    "experiment.train.checkpoint_every": 2,
    "experiment.eval.every": 2,
    "experiment.eval.exact_match_examples": 5,
    "experiment.eval.loss_batches": 1,
    "experiment.model.d_model": 32,
    "experiment.model.n_layers": 1,
}


def _args(out, **extra):
    args = ["run", "addition", "--output-dir", str(out)]
    for k, v in {**TINY, **extra}.items():
        args += ["--set", f"{k}={v}"]
    return args


def test_recipe_is_registered_and_its_config_is_valid():
    recipe = load_recipe("addition")
    cfg = recipe.config()
    assert isinstance(cfg, AdditionStudy) and isinstance(cfg.experiment, ExperimentConfig)
    assert cfg.precision == "float32" and cfg.seeds == 4 and cfg.workers == 2
    assert cfg.experiment.model.block.token_mixer.type == "mha"  # splice-mha attention
    assert cfg.experiment.data.task.type == "arithmetic"
    assert AdditionStudy.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError, match="bar"):
        AdditionStudy(bar=1.5)


def test_study_runs_each_seed_as_a_standard_experiment(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out)) == 0
    printed = capsys.readouterr().out
    assert "the decoder gets over 90% of held-out sums right" in printed
    assert "held-out exact match" in printed
    study = StudyResult.load(out)
    assert study.seeds == [0, 1] and set(study.figures) == {ARM}
    assert study.environment["precision"] == "float32" and study.cpu_time_s > 0
    claim = study.claim("learns-addition")
    assert claim.verdict in ("shown", "not shown") and len(claim.differences) == 2
    for seed in (0, 1):
        run = out / ARM / f"seed-{seed}"
        saved = json.loads((run / "config.json").read_text())
        assert saved["seed"] == seed and saved["train"]["steps"] == 4
        assert saved["train"]["precision"] == "float32"
        evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        ems = [r["exact_match"] for r in evals if r["kind"] == "eval"]
        assert [r["step"] for r in evals if r["kind"] == "eval"] == [2, 4]
        assert study.figures[ARM][seed]["exact_match"] == sum(ems) / 2  # the last two
        assert (run / "checkpoints" / "step-000004" / "model.safetensors").is_file()


def test_each_seed_resumes_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(out, **{"experiment.train.steps": 2})) == 0
    # the same study, 4 steps, resumed: each seed continues from its step-2 checkpoint
    args = [*_args(out), "--resume", "--allow-config-change", "train.steps"]
    assert main(args) == 0
    for seed in (0, 1):
        run = out / ARM / f"seed-{seed}"
        steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "train"]  # fmt: skip
        assert steps == sorted(set(steps)) and steps[-1] == 4 and 1 in steps  # no step twice
    # without --resume or --overwrite an existing run is refused, naming the folder
    assert main(_args(out)) != 0
    assert "seed-0" in capsys.readouterr().err
