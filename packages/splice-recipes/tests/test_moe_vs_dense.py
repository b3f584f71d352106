"""The ``moe-vs-dense`` study: equal active parameters by construction, and a tiny
end-to-end run over two seeds that writes the study with its claims and side table."""

from __future__ import annotations

import pydantic
import pytest
from splice.overrides import apply_overrides
from splice_recipes.moe_vs_dense import arm_experiment, config, parameter_counts, run
from splice_recipes.study import StudyResult

TINY = [
    "d_model=16",
    "n_layers=1",
    "n_heads=2",
    "hidden=8",
    "experts=[4, 8]",
    "seeds=2",
    "progress=false",
    "train.steps=4",
    "train.batch_size=8",
    "train.log_every=1",
    "train.schedule.warmup_steps=1",
    "train.checkpoint_every=4",
    "eval_every=2",
    "eval_examples=4",
    "loss_batches=1",
    "last_evals=2",
]


def test_arms_have_equal_active_ffn_parameters_and_more_total() -> None:
    cfg = config()
    assert cfg.arms() == ["dense", "moe4", "moe8", "moe16", "moe32"]
    assert cfg.precision == "float32"
    counts = {a: parameter_counts(arm_experiment(cfg, a)) for a in cfg.arms()}
    dense_total, dense_active = counts["dense"]
    assert dense_total == dense_active
    for e in cfg.experts:
        total, active = counts[f"moe{e}"]
        # Same FFN width per token (2 experts of 3h/2 = 3h); only the router's D*E differ.
        assert active == dense_active + cfg.n_layers * cfg.d_model * e
        # E experts of half dense's width: E/2 times dense's FFN weights in total
        ffn = cfg.n_layers * 3 * cfg.d_model * 3 * cfg.hidden  # SwiGLU: 3 matrices d x 3h
        assert total - dense_total == (e // 2 - 1) * ffn + cfg.n_layers * cfg.d_model * e


def test_bad_expert_counts_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="experts"):
        apply_overrides(config(), ["experts=[4, 4]"])


def test_tiny_study_writes_claims_and_side_table(tmp_path, capsys) -> None:
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    report = run(cfg)
    study = StudyResult.load(tmp_path)
    assert [c.claim.name for c in study.claims] == ["moe4-beats-dense", "moe8-beats-dense"]
    for c in study.claims:
        assert c.verdict in ("shown", "not shown") and len(c.differences) == 2
    for arm in ("dense", "moe4", "moe8"):
        for seed in (0, 1):
            f = study.figures[arm][seed]
            assert f["eval_loss"] > 0 and 0 <= f["exact_match"] <= 1 and f["ms_per_step"] > 0
    assert study.figures["moe8"][0]["load_max_mean"] >= 1.0  # logged by the MoE layers
    assert "| moe8 |" in study.extras["side_table"]
    assert "side table" in (tmp_path / "report.md").read_text()
    assert report["claim moe4-beats-dense"].split(" (")[0] in ("shown", "not shown")
    assert "MoE with 8 experts" in capsys.readouterr().out
