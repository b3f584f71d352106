"""The ``clip`` study: registered, tokenization, per-attribute zero-shot scoring, and a
tiny end-to-end run at a few steps (plumbing, not accuracy)."""

from __future__ import annotations

import pydantic
import pytest
import torch
from splice.cli import main
from splice.registry import get_registry
from splice_recipes.clip import (
    ClipStudy,
    claims,
    evaluate_clip,
    recipe,
    run,
    scored_scenes,
    tokenize,
    train_and_score,
    train_clip,
)
from splice_recipes.study import StudyResult
from splice_vision.data import ShapesTask


def test_recipe_is_registered_and_its_config_is_valid() -> None:
    reg = get_registry().get("recipe", "clip")
    assert reg.resolve_factory() is recipe
    cfg = recipe.config()
    assert isinstance(cfg, ClipStudy) and cfg.precision == "float32"
    assert not set(cfg.tuning_seeds) & set(cfg.seed_list()) and len(cfg.lrs) > 1
    assert cfg.arms() == ["infonce-b8", "siglip-b8", "infonce-b32", "siglip-b32"]
    names = [c.name for c in claims(cfg)]
    assert "siglip-count-above-chance" in names and "siglip-beats-infonce-b8" in names
    chance = {c.name: c.baseline for c in claims(cfg)}
    assert chance["infonce-side-above-chance"] == 0.5
    assert chance["infonce-color-above-chance"] == 0.25
    with pytest.raises(pydantic.ValidationError, match="batch_sizes"):
        ClipStudy(batch_sizes=[8, 100])


def test_tokenize_pads_right_and_ends_in_eos() -> None:
    ids, mask = tokenize(["ab", "abcd"], 8)
    assert ids.shape == mask.shape == (2, 5)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert ids[0, 2] == ids[1, 4] == 2  # eos
    with pytest.raises(ValueError, match="exceeds the text encoder's max_len 3"):
        tokenize(["abcd"], 3)


def test_trained_images_are_hashed_and_scores_are_fractions() -> None:
    cfg = ClipStudy(steps=3, eval_images=20, retrieval_pairs=8)
    model, seen, loss = train_clip(cfg, "siglip-b8", 0)
    # batches scan the stream from start = 8k, so neighbouring batches may share a scene
    assert 8 < len(seen) <= 24 and loss == loss
    assert model.config.init_logit_bias == pytest.approx(-torch.log(torch.tensor(8.0)).item())
    held = ShapesTask(cfg.task).sample("held_out", 20, seed=0)
    got = evaluate_clip(model, cfg, held)
    assert set(got) == {"zs_shape", "zs_color", "zs_count", "zs_side", "zs_mean", "i2t_r1"}
    assert all(0.0 <= v <= 1.0 for v in got.values())
    attrs = [got[f"zs_{a}"] for a in ("shape", "color", "count", "side")]
    assert got["zs_mean"] == pytest.approx(sum(attrs) / 4)
    assert all(v * 20 == pytest.approx(round(v * 20)) for v in attrs)  # 20 images each


def test_scored_sets_are_distinct_disjoint_and_never_trained_on() -> None:
    cfg = ClipStudy(steps=2, eval_images=40, dev_images=30, retrieval_pairs=8)
    held_out, dev = scored_scenes(cfg)
    images = {s.image.numpy().tobytes() for s in held_out + dev}
    assert len(held_out) == 40 and len(dev) == 30 and len(images) == 70
    # scoring on images the run trained on is refused
    trained = ShapesTask(cfg.task).distinct_captions("train", 8, seed=0)
    with pytest.raises(ValueError, match="scored images were trained on"):
        train_and_score(cfg, "infonce-b8", 0, trained)
    with pytest.raises(ValueError, match="tuning_seeds \\[1\\] are also reported seeds"):
        run(ClipStudy(seeds=2, tuning_seeds=[1], progress=False))


def test_study_runs_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    sets = {"seeds": 2, "progress": "false", "steps": 3, "eval_images": 16, "dev_images": 8,
            "retrieval_pairs": 8, "batch_sizes": "[4,8]", "lrs": "[0.001,0.002]",
            "workers": 1}  # fmt: skip
    args = ["run", "clip", "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "SigLIP beats InfoNCE at batch 4" in printed and "| arm | lr (dev) | zs_shape |" in printed
    )
    study = StudyResult.load(out)
    assert study.seeds == [0, 1] and set(study.figures) == {
        "infonce-b4", "siglip-b4", "infonce-b8", "siglip-b8"}  # fmt: skip
    assert all(0.0 <= study.figures[a][s]["zs_count"] <= 1.0 for a in study.figures for s in (0, 1))
    assert (out / "siglip-beats-infonce-b4.png").is_file() and (out / "report.md").is_file()
    # each arm's lr was chosen on the dev split (tuning seed 100) and trained the reported runs
    tuned = {t["name"]: t for t in study.extras["tuning"]}
    assert sorted(tuned) == sorted(study.figures) and "| tuned | candidate |" in printed
    for arm, t in tuned.items():
        assert t["seeds"] == [100] and t["candidates"] == [0.001, 0.002]
        assert t["value"] == t["candidates"][max(range(2), key=lambda i: (t["scores"][i], -i))]
        assert {study.figures[arm][s]["lr"] for s in (0, 1)} == {t["value"]}
        assert study.config["arm_lrs"][arm] == t["value"]
