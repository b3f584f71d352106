"""The ``lora-rank`` study: arms, adapters and learning rates from the config, disjoint
splits, the weight-delta analysis on known matrices, and a tiny end-to-end run over two
seeds in two worker processes, learning rates chosen on the dev split."""

from __future__ import annotations

import json

import pytest
import torch
from splice.overrides import apply_overrides
from splice_recipes.lora_rank import (
    adapter_of,
    check_splits,
    claims,
    config,
    lr_of,
    run,
    tuned_arms,
)
from splice_recipes.study import StudyResult
from splice_recipes.weight_delta import energy_in_top, random_energy_in_top

TINY = [
    "model.d_model=16",
    "model.n_layers=1",
    "model.block.token_mixer.n_heads=2",
    "ranks=[1, 2]",
    "main_rank=2",
    "alphas_over_r=[0.5, 8]",
    "seeds=2",
    "progress=false",
    "pretrain.steps=4",
    "pretrain.batch_size=8",
    "finetune.steps=4",
    "finetune.batch_size=8",
    "eval_every=2",
    "eval_examples=4",
    "last_evals=2",
    "full_lr_candidates=[0.001, 0.003]",
    "lora_lr_candidates=[0.003, 0.01]",
    "timed_rounds=2",
    "workers=2",
]


def test_arms_and_adapters():
    cfg = config()
    assert cfg.precision == "float32" and cfg.main_rank <= cfg.model.d_model // 8
    assert cfg.arms() == ["full", "r1", "r2", "r8", "r32", "r8-a0.5", "r8-a8", "qlora-r8"]
    assert adapter_of(cfg, "full") is None
    assert adapter_of(cfg, "r32") == {
        "type": "lora",
        "r": 32,
        "alpha": 64.0,
        "targets": "all-linear",
    }
    assert adapter_of(cfg, "r8-a0.5")["alpha"] == 4.0
    q = adapter_of(cfg, "qlora-r8")
    assert q["type"] == "qlora" and q["r"] == 8 and q["alpha"] == 16.0
    names = [c.name for c in claims(cfg)]
    assert names == [
        "delta-low-rank",
        "small-rank-recovers",
        "rank-helps",
        "alpha-moves",
        "rank-costs-time",
        "qlora-smaller",
    ]
    with pytest.raises(ValueError, match="main_rank 4 must be one of ranks"):
        apply_overrides(cfg, ["main_rank=4"])


def test_learning_rates_are_chosen_on_dev_seeds_that_are_not_reported():
    cfg = config()
    assert cfg.learning_rates == {}  # every tuned arm's rate is chosen on the dev split
    assert tuned_arms(cfg) == ["full", "r1", "r2", "r8", "r32"]
    assert len(cfg.full_lr_candidates) > 1 and len(cfg.lora_lr_candidates) > 1
    with pytest.raises(ValueError, match=r"learning_rates\['full'\] is not set"):
        lr_of(cfg, "full")
    set_ = apply_overrides(cfg, ['learning_rates={"full": 0.002, "r8": 0.01, "r1": 0.03}'])
    assert lr_of(set_, "full") == 0.002 and lr_of(set_, "r1") == 0.03
    # the alpha arms and QLoRA train at their rank's rate (alpha is swept at a fixed rate)
    assert lr_of(set_, "r8") == lr_of(set_, "r8-a8") == lr_of(set_, "qlora-r8") == 0.01
    with pytest.raises(ValueError, match=r"learning_rates: \['r8-a8'\] are not tuned arms"):
        apply_overrides(cfg, ['learning_rates={"r8-a8": 0.01}'])
    assert not set(cfg.tuning_seeds) & set(cfg.seed_list())
    with pytest.raises(ValueError, match="tuning_seeds \\[1\\] are also reported seeds"):
        apply_overrides(cfg, ["tuning_seeds=[1]"])


def test_dev_and_held_out_splits_are_disjoint_from_each_other_and_training():
    cfg = config()
    check_splits(cfg)  # raises on a problem in two splits
    from splice.training.experiment import build_task

    task = build_task(cfg.new_task)
    dev = {e.prompt for e in task.all_examples("dev")}
    held = {e.prompt for e in task.all_examples("held_out")}
    assert len(dev) > 500 and len(held) > 500 and not dev & held
    with pytest.raises(ValueError, match="new_task: need an arithmetic task with dev_fraction"):
        check_splits(apply_overrides(cfg, ["new_task.dev_fraction=0.0"]))


def test_energy_of_a_rank_one_delta_is_all_in_its_top_direction():
    u, v = torch.randn(16, 1), torch.randn(1, 12)
    low = {"w": u @ v}
    assert energy_in_top(low, 3) == pytest.approx([1.0, 1.0, 1.0])
    diag = {"w": torch.diag(torch.tensor([3.0, 2.0, 1.0]))}  # energies 9, 4, 1 of 14
    assert energy_in_top(diag, 3) == pytest.approx([9 / 14, 13 / 14, 1.0])
    rand = random_energy_in_top({"w": torch.zeros(64, 64)}, 8, seed=0)
    assert 0.1 < rand[-1] < 0.5  # a Gaussian matrix spreads its energy


@pytest.mark.slow  # dev tuning (pre-train + 4 fine-tunes), then 2 seeds x (pre-train + 6)
def test_tiny_study_end_to_end(tmp_path, capsys):
    # workers=2 (TINY): the one recipe test whose dev runs and seeds run in spawned workers
    # (~8 s of imports each; 46 s here against ~10 s in process), so the path a default
    # study takes stays exercised end to end
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    run(cfg)
    study = StudyResult.load(tmp_path)
    assert set(study.figures) == set(cfg.arms())
    # learning rates: each tuned arm's chosen on the dev split of tuning seed 100, recorded
    tunings = {t["name"]: t for t in study.extras["tuning"]}
    assert set(tunings) == {"full lr", "r1 lr", "r2 lr"}
    assert all(t["seeds"] == [100] and len(t["scores"]) == 2 for t in tunings.values())
    lrs = study.extras["learning_rates"]
    assert lrs == {arm: tunings[f"{arm} lr"]["value"] for arm in ("full", "r1", "r2")}
    assert study.config["learning_rates"] == lrs
    saved = json.loads((tmp_path / "r1" / "seed-1" / "config.json").read_text())
    assert saved["train"]["optimizer"]["lr"] == lrs["r1"]
    saved = json.loads((tmp_path / "qlora-r2" / "seed-0" / "config.json").read_text())
    assert saved["train"]["optimizer"]["lr"] == lrs["r2"]
    assert saved["eval"]["split"] == "held_out"
    dev = json.loads(
        (tmp_path / "tuning" / "full-lr0.003" / "seed-100" / "config.json").read_text()
    )
    assert dev["eval"]["split"] == "dev" and dev["seed"] == 100
    # step costs: FLOPs grow with rank (counted), every timed arm has a median step time
    r1, r2 = study.figures["r1"][0], study.figures["r2"][0]
    assert r2["flops_per_step"] > r1["flops_per_step"] > 0 and r1["step_ms"] > 0
    assert "step_ms" in study.figures["qlora-r2"][0]
    assert "flops_per_step" not in study.figures["qlora-r2"][0]  # its 4-bit matmul is uncounted
    full = study.figures["full"][0]
    assert 0 < full["energy_top2"] <= 1 and full["relative_change"] > 0
    assert len(study.extras["spectra"]["0"]["full"]) == 16
    lora = study.figures["r2"][0]
    assert lora["trainable_params"] < full["trainable_params"]
    q = study.figures["qlora-r2"][1]
    assert q["bytes_per_param"] < lora["bytes_per_param"] == 4.0  # NF4 storage (0.52 at d=64)
    assert q["weight_bytes"] < lora["weight_bytes"]
    assert study.claim("qlora-smaller").verdict == "shown"  # deterministic sizes
    assert (tmp_path / "delta_spectrum.png").is_file()
    assert (tmp_path / "shared" / "seed-1" / "pretrain" / "metrics.jsonl").is_file()
    assert "| qlora-r2 |" in capsys.readouterr().out
