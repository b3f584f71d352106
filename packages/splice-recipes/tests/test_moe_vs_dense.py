"""The ``moe-vs-dense`` recipe: equal active parameters by construction, and a tiny
end-to-end run that writes the table, the JSON and the loss-curve PNG."""

from __future__ import annotations

import pydantic
import pytest
from splice.overrides import apply_overrides
from splice_recipes.moe_vs_dense import arm_experiment, config, parameter_counts, run

TINY = [
    "d_model=16",
    "n_layers=1",
    "n_heads=2",
    "train.steps=3",
    "train.batch_size=8",
    "train.log_every=1",
    "train.schedule.warmup_steps=1",
    "eval_examples=4",
    "loss_batches=1",
]


def test_arms_have_equal_active_ffn_parameters_and_more_total() -> None:
    cfg = config()
    counts = {a.name: parameter_counts(arm_experiment(cfg, a)) for a in cfg.arms}
    dense_total, dense_active = counts["dense"]
    assert dense_total == dense_active
    for name, (total, active) in counts.items():
        if name == "dense":
            continue
        # Same routed+shared FFN width per token; only the router's D*E weights differ.
        router = cfg.n_layers * cfg.d_model * (8 if name.startswith("moe8") else 32)
        assert active == dense_active + router, name
        assert total > 2 * dense_total, name


def test_duplicate_arm_names_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="arms"):
        apply_overrides(config(), ['arms.1.name="dense"'])


def test_tiny_run_writes_table_json_and_png(tmp_path, capsys) -> None:
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    report = run(cfg)
    rows = report["rows"]
    assert list(rows) == [a.name for a in cfg.arms] and len(rows) == 7
    for name, row in rows.items():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["eval_loss"] > 0 and row["ms_per_step"] > 0
        if name == "dense":
            assert row["load_max_mean"] is None
        else:  # logged by the MoE layers through the Trainer: max/mean >= 1
            assert row["load_max_mean"] >= 1.0
    assert (tmp_path / "moe-vs-dense.md").read_text().count("\n") == 9  # header, rule, 7 rows
    assert (tmp_path / "loss_curves.png").stat().st_size > 5000
    assert "| fine32-auxfree |" in capsys.readouterr().out
