"""The ``dpo`` study: config validation, the dev/test split, the log-prob diagnosis, and a
tiny end-to-end run at a few steps (plumbing, not accuracy)."""

from __future__ import annotations

import json

import pydantic
import pytest
from splice.cli import main
from splice.data.examples import Example
from splice_recipes.dpo import (
    DPOStudy,
    MethodConfig,
    claims,
    config,
    dev_test_split,
    logp_change,
    method_config,
)
from splice_recipes.study import StudyResult


def test_default_config_arms_claims_and_method_runs(tmp_path):
    cfg = config()
    assert cfg.precision == "float32" and cfg.seeds == 3
    assert cfg.arms() == ["sft", "dpo", "dpo+nll", "ipo", "simpo", "orpo", "kto", "rft"]
    names = [c.name for c in claims(cfg)]
    assert "dpo+nll-beats-sft" in names and "dpo-chosen-logp-falls" in names
    m = {x.name: x for x in cfg.methods}
    common = {"data": tmp_path, "seed": 2, "init_from": "sft"}
    nll = method_config(cfg, m["dpo+nll"], folder=tmp_path / "a", **common)
    assert nll.objective.type == "weighted_sum" and nll.seed == 2
    assert nll.train.precision == "float32" and nll.output_dir == str(tmp_path / "a")
    kto = method_config(cfg, m["kto"], folder=tmp_path / "b", **common)
    assert kto.objective.type == "kto" and kto.data.task.type == "unpaired_jsonl"
    rft = method_config(cfg, m["rft"], folder=tmp_path / "c", **common)
    assert rft.objective.type == "sft" and rft.data.task.type == "jsonl"
    assert DPOStudy.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(pydantic.ValidationError, match="needs a loss"):
        MethodConfig(name="x")
    with pytest.raises(pydantic.ValidationError, match="must be unique and not 'sft'"):
        DPOStudy(methods=[MethodConfig(name="sft", kind="rft")])


def test_dev_test_split_is_disjoint_and_refuses_repeats_and_leaks():
    held = [Example(f"{i}+1=", str(i + 1)) for i in range(200)]
    dev, test = dev_test_split(held, [Example("999+1=", "1000")], 0.5)
    assert len(dev) + len(test) == 200 and 60 < len(dev) < 140
    assert not {e.prompt for e in dev} & {e.prompt for e in test}
    with pytest.raises(ValueError, match="repeat"):
        dev_test_split([*held, held[0]], [], 0.5)
    with pytest.raises(ValueError, match="1 held-out problems are training prompts"):
        dev_test_split(held, [held[5]], 0.5)


def test_logp_change_reads_first_and_last_train_records(tmp_path):
    rows = [{"kind": "train", "step": i, "dpo/logps/chosen": -1.0 - 0.1 * i} for i in range(10)]
    rows.insert(3, {"kind": "eval", "step": 3, "exact_match": 0.5})
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert logp_change(path, "chosen", window=2) == pytest.approx(-0.8)
    with pytest.raises(ValueError, match="logps/rejected"):
        logp_change(path, "rejected")


@pytest.mark.slow
def test_tiny_study_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    sets = {
        "seeds": 2,
        "progress": "false",
        "model.d_model": 16,
        "model.n_layers": 1,
        "sft.steps": 3,
        "sft.schedule.warmup_steps": 1,
        "sft.batch_size": 8,
        "prompts": 12,
        "reference_as_chosen": "true",
        "samples_per_prompt": 4,
        "preference_train.steps": 4,
        "preference_train.batch_size": 4,
        "preference_train.log_every": 1,
        "held_out_examples": 40,
    }
    args = ["run", "dpo", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "DPO + NLL on the chosen side beats its SFT start" in printed
    assert "| arm | dev accuracy | test accuracy |" in printed
    study = StudyResult.load(out)
    assert study.seeds == [0, 1] and study.environment["precision"] == "float32"
    assert set(study.figures) == set(config().arms())
    for seed in (0, 1):
        start = study.figures["sft"][seed]
        assert 0.0 <= start["test_acc"] <= 1.0 and start["test_examples"] > 0
        assert "chosen_logp_change" in study.figures["dpo"][seed]
        assert "chosen_logp_change" in study.figures["kto"][seed]
        pairs = (out / "shared" / f"seed-{seed}" / "pairs.jsonl").read_text().splitlines()
        assert len(pairs) == start["pairs"] > 0
        assert all(json.loads(p)["chosen"] != json.loads(p)["rejected"] for p in pairs)
        saved = json.loads((out / "dpo" / f"seed-{seed}" / "config.json").read_text())
        assert saved["seed"] == seed and saved["train"]["precision"] == "float32"
    assert (out / "dpo-chosen-logp-falls.png").is_file() and (out / "report.md").is_file()
