"""The ``vlm-grpo`` study: its prompt batches (the core's ``PromptBatches``) carry each scene's
image beside its question and true answer, its scored scenes are distinct and never trained
on (the check fires when they are), and a few-step run over two seeds, GRPO on the core
``Trainer``, writes its claims with intervals, the plot and each GRPO run's log and
checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from splice.overrides import apply_overrides
from splice.training.stream import derive_seed
from splice_recipes.study import StudyResult
from splice_recipes.vlm_compare import IMAGE_ID, TOKENIZER
from splice_recipes.vlm_grpo import (
    ARMS,
    GRPO_OFFSET,
    build_vlm,
    check_disjoint,
    config,
    grpo_prompts,
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
    "workers=1",
]


def test_defaults_pin_float32_and_prompts_carry_their_images() -> None:
    cfg = config()
    assert cfg.precision == "float32" and cfg.split == "held_out" and cfg.workers == 2
    prompts = grpo_prompts(cfg, 0, tokens_per_image=16)
    batch = prompts.batch(1)
    assert batch["images"].shape == (cfg.prompts_per_step, 3, 32, 32)
    assert torch.equal(prompts.batches(1).__next__()["images"], batch["images"])
    draw = derive_seed(prompts.seed, "prompts", 1)  # PromptBatches' seed of batch 1
    task = ShapesTask()
    for i, question in enumerate(batch["prompts"]):
        scene = task.scene("train", GRPO_OFFSET + i, seed=draw)
        assert torch.equal(batch["images"][i], scene.image)
        assert batch["references"][i] == scene.answer(question[:-1])  # the true answer
        ids = batch["prompt_ids"][i]
        assert ids.count(IMAGE_ID) == 16 and ids[-len(question) :] == TOKENIZER.encode(question)
    # each question asked of a quarter of the scenes
    assert sorted(batch["prompts"]) == sorted(["color?", "shape?", "count?", "side?"] * 4)
    assert not torch.equal(prompts.batch(2)["images"], batch["images"])
    assert build_vlm(cfg).tokens_per_image == 16


def test_scored_scenes_are_distinct_and_never_trained_on() -> None:
    cfg, task = config(), ShapesTask()
    held = scored_scenes(task, cfg, 0)
    pool = [s.image for s in sft_pool(task, cfg, 0)]
    check_disjoint(held, pool + list(grpo_prompts(cfg, 0, 16).batch(0)["images"]))  # passes
    dev = scored_scenes(task, cfg.model_copy(update={"split": "dev"}), 0)
    check_disjoint(dev, pool)
    with pytest.raises(ValueError, match="2 scored images were also trained on"):
        check_disjoint(held[:3], pool + [s.image for s in held[1:3]])
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
        folder = tmp_path / "grpo" / f"seed-{seed}"
        curves = json.loads((folder / "curves.json").read_text())
        assert len(curves["reward"]) == 2 and len(curves["kl"]) == 2
        # GRPO ran on the core Trainer: its log holds the rollout figures, and its final
        # checkpoint is there to resume from
        log = [
            json.loads(x) for x in (folder / "trainer" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2]
        assert [r["reward"] for r in log if r["kind"] == "train"] == curves["reward"]
        assert (folder / "trainer" / "checkpoints" / "step-000002").is_dir()
