"""The ``clip`` recipe: registered, tokenization, a tiny end-to-end run with its table."""

from __future__ import annotations

import pytest
import torch
from splice.registry import get_registry
from splice_recipes.clip import ClipRecipeConfig, recipe, run, tokenize


def test_recipe_is_registered() -> None:
    reg = get_registry().get("recipe", "clip")
    assert reg.resolve_factory() is recipe
    assert isinstance(recipe.config(), ClipRecipeConfig)


def test_tokenize_pads_right_and_ends_in_eos() -> None:
    ids, mask = tokenize(["ab", "abcd"], 8)
    assert ids.shape == mask.shape == (2, 5)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert ids[0, 2] == ids[1, 4] == 2  # eos
    with pytest.raises(ValueError, match="exceeds the text encoder's max_len 3"):
        tokenize(["abcd"], 3)


def test_tiny_run_prints_the_table(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    cfg = ClipRecipeConfig(
        steps=3, batch_size=8, eval_images=12, retrieval_pairs=8, output_dir=str(tmp_path)
    )
    report = run(cfg)
    out = capsys.readouterr().out
    assert "| infonce |" in out and "| siglip |" in out and "zero-shot acc" in out
    for loss in ("infonce", "siglip"):
        r = report[loss]
        assert 0.0 <= r["zero_shot_acc"] <= 1.0
        assert 0.0 <= r["i2t_r1"] <= r["i2t_r5"] <= 1.0
    assert (tmp_path / "clip.md").read_text().strip() == report["table"]
