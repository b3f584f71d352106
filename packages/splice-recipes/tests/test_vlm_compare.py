"""The ``vlm-compare`` recipe: batches mask image tokens, arms build, a tiny end-to-end run."""

from __future__ import annotations

import torch
from splice.registry import get_registry
from splice_recipes.vlm_compare import (
    ARMS,
    IMAGE_ID,
    StageConfig,
    VLMCompareConfig,
    recipe,
    run,
    vision_batch,
)
from splice_vision.data import ShapesTask


def test_recipe_is_registered() -> None:
    reg = get_registry().get("recipe", "vlm-compare")
    assert reg.resolve_factory() is recipe
    assert isinstance(recipe.config(), VLMCompareConfig)


def test_batches_put_no_loss_on_image_or_prompt_tokens() -> None:
    scenes = ShapesTask().sample("train", 2)
    batch = vision_batch(scenes, ["color", None], 16)
    ids, labels = batch["input_ids"], batch["labels"]
    assert (ids == IMAGE_ID).sum() == 32
    assert bool((labels[ids == IMAGE_ID] == -100).all())
    # the targets are exactly the answer / the caption, each followed by eos
    from splice_recipes.vlm_compare import TOKENIZER

    first = labels[0][labels[0] != -100].tolist()
    assert TOKENIZER.decode(first[:-1]) == scenes[0].colour and first[-1] == TOKENIZER.eos_id
    second = labels[1][labels[1] != -100].tolist()
    assert TOKENIZER.decode(second[:-1]) == scenes[1].caption
    assert batch["images"].shape == (2, 3, 32, 32)


def test_tiny_run_trains_every_arm_and_prints_one_table(capsys) -> None:
    torch.manual_seed(0)
    tiny = StageConfig(steps=2, batch_size=4)
    cfg = VLMCompareConfig(lm_pretrain=tiny, clip_steps=2, stage1=tiny, stage2=tiny, eval_scenes=2)
    report = run(cfg)
    out = capsys.readouterr().out
    for arm in ARMS:
        assert f"| {arm} |" in out
        r = report[arm]
        assert 0.0 <= r["vqa_em"] <= 1.0 and 0 < r["trainable"] <= r["total"]
    assert report["llava-mlp"]["tokens_per_image"] == 16
    assert report["qformer"]["tokens_per_image"] == 8
    assert report["cross-attn"]["tokens_per_image"] == 0
    assert report["native"]["trainable"] == report["native"]["total"]
    # connector stage 2 trains connector + LM, not the frozen ViT
    assert report["llava-mlp"]["trainable"] < report["llava-mlp"]["total"]
