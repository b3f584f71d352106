"""The ``vlm-grpo`` study: its prompt batches carry images, its scored scenes are distinct and
never trained on (the check fires when they are), and a few-step run over two seeds writes
its claims with intervals and the plot."""

from __future__ import annotations

import json

import pytest
import torch
from splice.overrides import apply_overrides
from splice_recipes.study import StudyResult
from splice_recipes.vlm_compare import IMAGE_ID
from splice_recipes.vlm_grpo import (
    ARMS,
    build_vlm,
    check_disjoint,
    config,
    grpo_scenes,
    prompt_batch,
    run,
    scored_scenes,
    sft_pool,
)
from splice_vision.data import ShapesTask

TINY = [
    "d_model=32",
    "n_layers=1",
    "n_heads=2",
    "vit_width=16",
    "seeds=2",
    "progress=false",
    "sft_scenes=4",
    "sft.steps=3",
    "sft.batch_size=4",
    "grpo_steps=2",
    "prompts_per_step=2",
    "group_size=2",
    "max_new_tokens=3",
    "eval_scenes=2",
]


def test_defaults_pin_float32_and_prompts_carry_their_images() -> None:
    cfg = config()
    assert cfg.precision == "float32" and cfg.split == "held_out"
    scenes = grpo_scenes(ShapesTask(), cfg, 0, 0)
    batch = prompt_batch(scenes, step=1, tokens_per_image=16)
    assert batch["images"].shape == (cfg.prompts_per_step, 3, 32, 32)
    assert torch.equal(batch["images"][3], scenes[3].image)
    assert batch["prompts"][:2] == ["shape?", "count?"]
    assert batch["references"][:2] == [scenes[0].shape, str(scenes[1].count)]
    assert batch["prompt_ids"][0].count(IMAGE_ID) == 16
    assert build_vlm(cfg).tokens_per_image == 16


def test_scored_scenes_are_distinct_and_never_trained_on() -> None:
    cfg, task = config(), ShapesTask()
    held = scored_scenes(task, cfg, 0)
    pool = sft_pool(task, cfg, 0)
    check_disjoint(held, pool + grpo_scenes(task, cfg, 0, 0))  # passes
    dev = scored_scenes(task, cfg.model_copy(update={"split": "dev"}), 0)
    check_disjoint(dev, pool)
    with pytest.raises(ValueError, match="2 scored images were also trained on"):
        check_disjoint(held[:3], pool + held[1:3])
    with pytest.raises(ValueError, match="1 scored images repeat"):
        check_disjoint([held[0], held[0]], pool)


def test_tiny_study_prints_claims_with_intervals(tmp_path, capsys) -> None:
    cfg = apply_overrides(config(), [*TINY, f"output_dir={tmp_path}"])
    run(cfg)
    study = StudyResult.load(tmp_path)
    assert list(study.figures) == list(ARMS) and len(study.claims) == 5
    for c in study.claims:
        assert c.verdict in ("shown", "not shown") and len(c.differences) == 2
    assert "GRPO raises held-out VQA exact match over its SFT start" in capsys.readouterr().out
    assert (tmp_path / "vlm-grpo.png").stat().st_size > 0
    for seed in study.seeds:
        sft, grpo = study.figures["sft"][seed], study.figures["grpo"][seed]
        # both arms start from the same SFT model of the seed
        assert sft["sft_loss"] == grpo["sft_loss"]
        assert 0.0 <= grpo["vqa_em"] <= 1.0 and 0.0 <= grpo["final_reward"] <= 1.0
        curves = json.loads((tmp_path / "grpo" / f"seed-{seed}" / "curves.json").read_text())
        assert len(curves["reward"]) == 2 and len(curves["kl"]) == 2
