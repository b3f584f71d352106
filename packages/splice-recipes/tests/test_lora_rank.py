"""The ``lora-rank`` study: arms and adapters from the config, the weight-delta analysis on
known matrices, and a tiny end-to-end run over two seeds."""

from __future__ import annotations

import pytest
import torch
from splice.overrides import apply_overrides
from splice_recipes.lora_rank import adapter_of, claims, config, run
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
    "pretrain.checkpoint_every=4",
    "finetune.steps=4",
    "finetune.batch_size=8",
    "finetune.checkpoint_every=4",
    "eval_every=2",
    "eval_examples=4",
    "last_evals=2",
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


def test_energy_of_a_rank_one_delta_is_all_in_its_top_direction():
    u, v = torch.randn(16, 1), torch.randn(1, 12)
    low = {"w": u @ v}
    assert energy_in_top(low, 3) == pytest.approx([1.0, 1.0, 1.0])
    diag = {"w": torch.diag(torch.tensor([3.0, 2.0, 1.0]))}  # energies 9, 4, 1 of 14
    assert energy_in_top(diag, 3) == pytest.approx([9 / 14, 13 / 14, 1.0])
    rand = random_energy_in_top({"w": torch.zeros(64, 64)}, 8, seed=0)
    assert 0.1 < rand[-1] < 0.5  # a Gaussian matrix spreads its energy


@pytest.mark.slow  # 2 seeds x (pre-train + 6 fine-tunes), a few steps each
def test_tiny_study_end_to_end(tmp_path, capsys):
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    run(cfg)
    study = StudyResult.load(tmp_path)
    assert set(study.figures) == set(cfg.arms())
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
