"""The ``moe-vs-dense`` study: equal active parameters by construction, learning rates chosen
per family on the dev split of a tuning seed's own chain, and tiny end-to-end runs (in this
process) that write the study with its claims, the chain's floor and the side table."""

from __future__ import annotations

import functools
import json

import pydantic
import pytest
from splice.overrides import apply_overrides
from splice_recipes.moe_vs_dense import (
    arm_experiment,
    claims,
    config,
    dev_run,
    held_out_ce,
    parameter_counts,
    run,
    run_seed,
)
from splice_recipes.study import StudyResult, check_sendable

TINY = [
    "d_model=16",
    "n_layers=1",
    "n_heads=2",
    "hidden=8",
    "experts=[4, 8]",
    "tune_moe_arm=moe4",
    "seeds=2",
    "progress=false",
    "task.alphabet=abcdefgh",
    "task.length=8",
    "train.steps=4",
    "train.batch_size=8",
    "train.log_every=1",
    "train.schedule.warmup_steps=1",
    "train.checkpoint_every=4",
    "eval_every=2",
    "loss_batches=2",
    "last_evals=2",
]


def test_arms_have_equal_active_ffn_parameters_and_more_total() -> None:
    cfg = config()
    assert cfg.arms() == ["dense", "moe4", "moe8", "moe16", "moe32"]
    assert cfg.precision == "float32" and cfg.workers == 2 and cfg.seeds == 5
    counts = {a: parameter_counts(arm_experiment(cfg, a, lr=1e-3)) for a in cfg.arms()}
    dense_total, dense_active = counts["dense"]
    assert dense_total == dense_active
    for e in cfg.experts:
        total, active = counts[f"moe{e}"]
        # Same FFN width per token (2 experts of 3h/2 = 3h); only the router's D*E differ.
        assert active == dense_active + cfg.n_layers * cfg.d_model * e
        # E experts of half dense's width: E/2 times dense's FFN weights in total
        ffn = cfg.n_layers * 3 * cfg.d_model * 3 * cfg.hidden  # SwiGLU: 3 matrices d x 3h
        assert total - dense_total == (e // 2 - 1) * ffn + cfg.n_layers * cfg.d_model * e


def test_each_seed_trains_on_its_own_chain_and_each_family_at_its_own_lr() -> None:
    cfg = apply_overrides(config(), ["dense_lr=0.001", "moe_lr=0.01"])
    a, b = (arm_experiment(cfg, "moe8", seed=s) for s in (0, 3))
    assert (a.data.task.language_seed, b.data.task.language_seed) == (0, 3)
    assert a.train.optimizer.lr == 0.01
    assert arm_experiment(cfg, "dense").train.optimizer.lr == 0.001
    dev = arm_experiment(cfg, "dense", split="dev")
    assert dev.eval.split == "dev" and dev.eval.exact_match_examples == 0
    with pytest.raises(ValueError, match="chooses it on the dev split"):
        arm_experiment(config(), "dense")
    names = [c.name for c in claims(cfg)]
    assert names[-1] == "moe32-beats-moe4" and len(names) == 5


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("experts=[4, 4]", "experts"),
        ("tune_moe_arm=moe64", "tune_moe_arm"),
        ("tuning_seeds=[1]", "also reported seeds"),
        ("task.dev_fraction=0", "dev split"),
    ],
)
def test_bad_configs_are_rejected(override: str, match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        apply_overrides(config(), [override])


def test_held_out_ce_is_the_log_perplexity_without_the_balancing_loss(tmp_path) -> None:
    lines = [
        {"kind": "eval", "step": 2, "eval_loss": 9.0, "eval_perplexity": 4.0},
        {"kind": "train", "step": 3, "loss": 1.0},
        {"kind": "eval", "step": 4, "eval_loss": 9.0, "eval_perplexity": 2.0},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert held_out_ce(path, 2) == pytest.approx((1.3862944 + 0.6931472) / 2)
    assert held_out_ce(path, 1) == pytest.approx(0.6931472)


def test_tiny_study_chooses_lrs_on_dev_and_writes_claims(tmp_path, capsys) -> None:
    # In this process (workers=1): each spawned worker imports torch and the plugins afresh
    # (~8 s), four per study, which made this test 38 s where it now takes 2-3 s. The
    # figures do not depend on the workers (test_study_runner, test_study_tuning; vlm-compare
    # runs its tiny study in workers); what a worker is sent must pickle.
    cfg = apply_overrides(
        config(), [*TINY, "lrs=[0.001, 0.01]", "workers=1", f"output_dir={tmp_path}"]
    )
    for job in (run_seed, functools.partial(dev_run, cfg)):
        check_sendable(job)  # raises, naming the function, if a worker could not get it
    report = run(cfg)
    study = StudyResult.load(tmp_path)
    assert [c.claim.name for c in study.claims] == [
        "moe4-beats-dense", "moe8-beats-dense", "moe8-beats-moe4",
    ]  # fmt: skip
    for c in study.claims:
        assert c.verdict in ("shown", "not shown") and len(c.differences) == 2
    tunings = study.extras["tuning"]
    assert [t["name"] for t in tunings] == ["dense lr (on dense)", "moe lr (on moe4)"]
    for t in tunings:
        assert t["seeds"] == [100] and t["candidates"] == [0.001, 0.01]
        assert t["direction"] == "lower" and t["value"] in (0.001, 0.01)
        best = min(t["scores"])
        assert t["scores"][t["chosen"]] == best
    assert study.extras["lr"] == {"dense": tunings[0]["value"], "moe": tunings[1]["value"]}
    assert (tmp_path / "tuning" / "moe4-lr0.01" / "seed-100" / "metrics.jsonl").is_file()
    for arm in ("dense", "moe4", "moe8"):
        for seed in (0, 1):
            f = study.figures[arm][seed]
            # a 4-step model is far above the chain's own loss on the same sequences
            assert f["eval_ce"] > f["chain_ce"] > 0
            assert f["excess_ce"] == pytest.approx(f["eval_ce"] - f["chain_ce"])
            assert f["ms_per_step"] > 0 and f["cpu_ms_per_step"] > 0
    # different seeds: different chains, so different floors
    assert study.figures["dense"][0]["chain_ce"] != study.figures["dense"][1]["chain_ce"]
    # same seed: every arm scored on the same held-out sequences
    assert study.figures["moe8"][1]["chain_ce"] == study.figures["dense"][1]["chain_ce"]
    assert study.figures["moe8"][0]["load_max_mean"] >= 1.0  # logged by the MoE layers
    assert "| moe8 |" in study.extras["side_table"]
    report_md = (tmp_path / "report.md").read_text()
    assert "side table" in report_md and "dev choice" in report_md
    assert report["claim moe4-beats-dense"].split(" (")[0] in ("shown", "not shown")
    assert "MoE with 8 experts" in capsys.readouterr().out


def test_pinned_lrs_skip_the_dev_split(tmp_path) -> None:
    cfg = apply_overrides(
        config(),
        [*TINY, "seeds=2", "workers=1", "dense_lr=0.002", "moe_lr=0.004", f"output_dir={tmp_path}"],
    )
    run(cfg)
    study = StudyResult.load(tmp_path)
    assert "tuning" not in study.extras and not (tmp_path / "tuning").exists()
    assert study.extras["lr"] == {"dense": 0.002, "moe": 0.004}
    assert "| moe4 | " in study.extras["side_table"] and "| 0.004 |" in study.extras["side_table"]
