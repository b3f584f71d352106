"""The ``addition`` recipe: registered, valid, and runnable end to end (plumbing, not accuracy)."""

from __future__ import annotations

import json

from splice.cli import main
from splice.cli.run import load_recipe
from splice.training.configs import ExperimentConfig


def test_recipe_is_registered_and_its_config_is_valid():
    recipe = load_recipe("addition")
    cfg = recipe.config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.model.block.token_mixer.type == "mha"  # splice-mha attention
    assert cfg.data.task.type == "arithmetic"
    assert ExperimentConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_recipe_runs_with_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "addition",
            "--output-dir",
            str(out),
            "--set",
            "train.steps=4",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.progress=false",
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "eval.every=2",
            "--set",
            "eval.exact_match_examples=5",
            "--set",
            "eval.loss_batches=1",
            "--set",
            "model.d_model=32",
            "--set",
            "model.n_layers=1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out exact-match accuracy:" in printed and "of 5 unseen problems" in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["steps"] == 4 and saved["model"]["d_model"] == 32
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["kind"] == "eval"] == [2, 4]
    assert (out / "checkpoints" / "step-000004" / "model.safetensors").is_file()
