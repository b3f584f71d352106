"""The ``dpo`` recipe: config validation and a tiny end-to-end plumbing run."""

from __future__ import annotations

import json

import pydantic
import pytest
from splice.overrides import apply_overrides
from splice_recipes.dpo import DPORecipeConfig, MethodConfig, config, method_config, run


def test_default_config_rows_and_round_trip() -> None:
    cfg = config()
    assert [m.name for m in cfg.methods] == ["dpo", "dpo+sft", "simpo", "orpo", "rft"]
    assert [m.loss.type for m in cfg.methods if m.loss is not None] == [
        "sigmoid",
        "sigmoid",
        "simpo",
        "orpo",
    ]
    assert DPORecipeConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_method_configs(tmp_path) -> None:
    cfg = config()
    exp = method_config(
        cfg, cfg.methods[0], pairs=tmp_path / "p", accepted=tmp_path / "a", init_from="sft"
    )
    assert exp.objective.type == "dpo" and exp.data.task.type == "preference_jsonl"
    composed = method_config(
        cfg, cfg.methods[1], pairs=tmp_path / "p", accepted=tmp_path / "a", init_from="sft"
    )
    assert composed.objective.type == "weighted_sum"
    assert [t.weight for t in composed.objective.terms] == [1.0, 1.0]
    assert composed.run_dir().endswith("dpo+sft")
    rft = method_config(
        cfg, cfg.methods[4], pairs=tmp_path / "p", accepted=tmp_path / "a", init_from="sft"
    )
    assert rft.objective.type == "sft" and rft.data.task.type == "jsonl" and rft.init_from == "sft"
    with pytest.raises(pydantic.ValidationError, match="needs a loss"):
        MethodConfig(name="x")


@pytest.mark.slow
def test_tiny_run_prints_the_table(tmp_path, capsys) -> None:
    cfg = apply_overrides(
        config(),
        [
            "model.d_model=16",
            "model.n_layers=1",
            "sft.steps=3",
            "sft.schedule.warmup_steps=1",
            "sft.batch_size=8",
            "prompts=12",
            "samples_per_prompt=3",
            "reference_as_chosen=true",
            "preference_train.steps=2",
            "preference_train.batch_size=4",
            "eval_examples=8",
            f"output_dir={tmp_path}",
        ],
    )
    cfg.methods = [m for m in cfg.methods if m.kind == "preference"]
    report = run(cfg)
    assert list(report["rows"]) == ["dpo", "dpo+sft", "simpo", "orpo"]
    for row in report["rows"].values():
        assert 0.0 <= row["acc_before"] <= 1.0 and 0.0 <= row["acc_after"] <= 1.0
        assert row["train_time_s"] > 0
    table = (tmp_path / "dpo.md").read_text()
    assert table.startswith("| method | acc before | acc after | Δ | train time (s) |")
    assert table.count("\n") == 6
    pairs = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == report["offline"]["pairs"] > 0
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert "| dpo |" in capsys.readouterr().out
