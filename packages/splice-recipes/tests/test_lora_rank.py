"""The ``lora-rank`` recipe: config, the runs it makes, and a tiny end-to-end plumbing run."""

from __future__ import annotations

import pydantic
import pytest
from splice.overrides import apply_overrides
from splice_recipes.lora_rank import config, finetune_config, run

TINY = [
    "model.d_model=16",
    "model.n_layers=1",
    "pretrain.steps=3",
    "pretrain.schedule.warmup_steps=1",
    "finetune.steps=2",
    "finetune.schedule.warmup_steps=1",
    "pretrain.batch_size=8",
    "finetune.batch_size=8",
    "eval_examples=4",
    "ranks=[1, 4]",
]


def test_default_sweep_and_the_runs_it_makes() -> None:
    cfg = config()
    assert cfg.ranks == [1, 2, 4, 8, 16, 64] and cfg.full_finetune
    r8 = finetune_config(cfg, 8, init_from="pre")
    assert r8.adapter.r == 8 and r8.adapter.alpha == 16.0 and r8.adapter.targets == "all-linear"
    assert r8.train.optimizer.lr == cfg.lora_lr and r8.init_from == "pre"
    assert r8.data.task.op == "-" and r8.eval.tasks["old"].op == "+"
    full = finetune_config(cfg, None, init_from="pre")
    assert full.adapter is None and full.train.optimizer.lr == cfg.full_lr
    with pytest.raises(pydantic.ValidationError, match="each rank once"):
        apply_overrides(cfg, ["ranks=[2, 2]"])


def test_tiny_run_prints_the_table(tmp_path, capsys) -> None:
    report = run(apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"]))
    rows = report["rows"]
    assert list(rows) == ["r1", "r4", "full"]
    assert rows["r1"]["trainable_params"] < rows["r4"]["trainable_params"]
    assert rows["r4"]["trainable_params"] < rows["full"]["trainable_params"]
    assert rows["full"]["trainable_percent"] == 100.0
    # r=1 on every linear of one block (q, k, v, o: 16x16; up 16->64, down 64->16).
    assert rows["r1"]["trainable_params"] == 4 * (16 + 16) + (16 + 64) + (64 + 16)
    assert all(0.0 <= r["new_after"] <= 1.0 and r["step_ms"] > 0 for r in rows.values())
    assert all(r["paired_step_ms"] > 0 for r in rows.values())
    out = capsys.readouterr().out
    assert "| r4 |" in out and "| full |" in out
    assert (tmp_path / "lora-rank.md").read_text().count("\n") == 5
    assert (tmp_path / "r1" / "checkpoints").is_dir()
