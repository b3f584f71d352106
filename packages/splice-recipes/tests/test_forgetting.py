"""The ``forgetting`` recipe: config validation and a tiny end-to-end plumbing run."""

from __future__ import annotations

import pydantic
import pytest
from splice.cli import main
from splice.overrides import apply_overrides
from splice_recipes.forgetting import ForgettingConfig, arm_config, config, run

TINY = [
    "model.d_model=16",
    "model.n_layers=1",
    "pretrain.steps=4",
    "pretrain.schedule.warmup_steps=1",
    "finetune.steps=2",
    "pretrain.batch_size=8",
    "finetune.batch_size=8",
    "eval_examples=6",
    "reference_batches=2",
    "arms.3.regularizers.0.n_batches=2",
]


def test_default_config_has_the_five_arms_and_regularizers() -> None:
    cfg = config()
    assert [a.name for a in cfg.arms] == ["full", "low_lr", "l2sp", "ewc", "kl"]
    assert [r.type for a in cfg.arms for r in a.regularizers] == ["l2sp", "ewc", "kl_reference"]
    assert ForgettingConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_arm_learning_rate_overrides_finetune_and_carries_old_task_data() -> None:
    cfg = config()
    exp = arm_config(cfg, cfg.arms[1], init_from="somewhere")
    assert exp.train.optimizer.lr == 1e-4
    assert exp.reference_data is not None and exp.reference_data.task.op == "+"
    assert exp.data.task.op == "-" and exp.init_from == "somewhere"
    assert cfg.finetune.optimizer.lr == 1e-3  # the shared config was not mutated


def test_duplicate_arm_names_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="arms"):
        apply_overrides(config(), ['arms.1.name="full"'])


def test_tiny_run_produces_the_table(tmp_path, capsys) -> None:
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    report = run(cfg)
    rows = report["rows"]
    assert list(rows) == ["full", "low_lr", "l2sp", "ewc", "kl"]
    for row in rows.values():
        for key in ("new_after", "old_before", "old_after"):
            assert 0.0 <= row[key] <= 1.0
        assert row["trainable_params"] > 0 and row["train_time_s"] > 0
    assert (tmp_path / "forgetting.md").read_text().count("\n") == 7  # header, rule, 5 rows
    assert (tmp_path / "ewc" / "metrics.jsonl").is_file()
    assert "| ewc | lr=0.001 + ewc(weight=1)" in capsys.readouterr().out


def test_cli_runs_the_recipe_by_name(tmp_path, capsys) -> None:
    args = [
        f"--set={s}"
        for s in [
            *TINY,
            'arms=[{"name": "full"}, {"name": "l2sp", '
            '"regularizers": [{"type": "l2sp", "weight": 0.5}]}]',
        ]
        if not s.startswith("arms.3")
    ]
    assert main(["run", "forgetting", *args, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| l2sp | lr=0.001 + l2sp(weight=0.5)" in out
    assert "reusing" not in out
    # Same pre-training config in the same folder: the arms start from the saved model.
    assert main(["run", "forgetting", *args, "--output-dir", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    assert "reusing the pre-trained model" in again
    first, second = (_row_cells(text, "l2sp") for text in (out, again))
    assert first[:6] == second[:6]  # same accuracies; only the timing may differ


def _row_cells(text: str, arm: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {arm} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_pretraining_is_redone_when_the_code_changed(tmp_path, capsys, monkeypatch) -> None:
    """A matching config is not enough: a pre-training by other code is not reused."""
    import splice_recipes.forgetting as recipe

    overrides = [*TINY[:-1], 'arms=[{"name": "full"}]', f"output_dir={tmp_path}"]
    cfg = apply_overrides(config(), overrides)
    run(cfg)
    run(cfg)
    assert "reusing the pre-trained model" in capsys.readouterr().out
    monkeypatch.setattr(recipe, "code_fingerprint", lambda: "other code")
    run(cfg)
    out = capsys.readouterr().out
    assert "reusing" not in out and "the splice code changed since" in out


def test_code_fingerprint_covers_core_and_plugins() -> None:
    from splice_recipes.forgetting import fingerprinted_packages

    # the model's attention (splice_mha) and the regularizers shape the trained weights too
    assert {"splice", "splice_mha", "splice_forgetting", "splice_recipes"} <= set(
        fingerprinted_packages()
    )
