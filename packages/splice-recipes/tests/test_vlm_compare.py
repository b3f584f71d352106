"""The ``vlm-compare`` study: disjoint grid-scene splits with rule-checked answers, batches
that put no loss on image tokens, FLOPs per answer against a hand count, and a tiny study
end to end (two seeds) that writes every figure side by side."""

from __future__ import annotations

import pytest
import torch
from splice.overrides import apply_overrides
from splice.registry import get_registry
from splice_recipes.grid_scenes import (
    COLOURS,
    GRID,
    GridTask,
    check_disjoint,
    layout_split,
)
from splice_recipes.study import StudyResult
from splice_recipes.vlm_compare import (
    ARMS,
    IMAGE_ID,
    TOKENIZER,
    VOCAB,
    VLMCompareConfig,
    qa_batch,
    recipe,
    run,
    vision_batch,
)
from splice_recipes.vlm_costs import forward_flops
from splice_vision.configs import NativeVLMConfig
from splice_vision.data import ShapesTask
from splice_vision.vlm import NativeVLM

TINY = [
    "seeds=2",
    "progress=false",
    "lm_pretrain.steps=2",
    "lm_pretrain.batch_size=4",
    "clip_steps=1",
    "stage1.steps=1",
    "stage2.steps=2",
    "stage1.batch_size=4",
    "stage2.batch_size=4",
    "eval_scenes=4",
    "dev_scenes=2",
    "lrs=[0.001,0.003]",
]


def test_recipe_is_registered_and_pins_float32() -> None:
    reg = get_registry().get("recipe", "vlm-compare")
    assert reg.resolve_factory() is recipe
    assert VLMCompareConfig().precision == "float32"
    with pytest.raises(ValueError, match="precision"):
        VLMCompareConfig(precision="bf16")


def test_splits_are_disjoint_layouts_and_answers_follow_the_layout() -> None:
    task = GridTask()
    for split in ("train", "dev", "held_out"):
        scenes = [task.scene(split, i) for i in range(40)]  # type: ignore[arg-type]
        assert all(layout_split(s.layout) == split for s in scenes)
    held = task.distinct("held_out", 30)
    assert len({s.layout for s in held}) == 30
    train = {task.scene("train", i, seed=3).layout for i in range(300)}
    check_disjoint(train, [s.layout for s in held])
    with pytest.raises(ValueError, match="trained on"):
        check_disjoint(train, [next(iter(train))])
    for s in held:
        cells = {c: divmod(cell, GRID) for cell, c, _ in s.layout}
        assert s.answer("count") == str(len(s.layout)) and len(cells) == len(s.layout)
        target = s.questions[1].removesuffix(" shape")
        assert s.answers[1] == next(sh for _, c, sh in s.layout if c == target)
        a, axis, b = s.questions[2].partition(" left of ")
        if axis:
            truth = cells[a][1] < cells[b][1]
        else:
            a, _, b = s.questions[2].partition(" above ")
            truth = cells[a][0] < cells[b][0]
        assert s.answers[2] == ("yes" if truth else "no")
        # every object's colour is drawn at its cell's centre
        for cell, colour, _ in s.layout:
            row, col = divmod(cell, GRID)
            pixel = s.image[:, row * 8 + 4, col * 8 + 4]
            assert torch.allclose(pixel, torch.tensor(COLOURS[colour]), atol=0.3)


def test_batches_put_no_loss_on_image_or_prompt_tokens() -> None:
    scenes = ShapesTask().sample("train", 2)
    batch = vision_batch(scenes, ["color", None], 16)
    ids, labels = batch["input_ids"], batch["labels"]
    assert (ids == IMAGE_ID).sum() == 32
    assert bool((labels[ids == IMAGE_ID] == -100).all())
    first = labels[0][labels[0] != -100].tolist()
    assert TOKENIZER.decode(first[:-1]) == scenes[0].colour and first[-1] == TOKENIZER.eos_id
    second = labels[1][labels[1] != -100].tolist()
    assert TOKENIZER.decode(second[:-1]) == scenes[1].caption
    grid = [GridTask().scene("train", i) for i in range(3)]
    qa = qa_batch(grid, step=1, tokens_per_image=16)
    for row, scene in enumerate(grid):
        target = qa["labels"][row][qa["labels"][row] != -100].tolist()
        assert TOKENIZER.decode(target[:-1]) == scene.answers[(1 + row) % 3]


def test_flops_per_answer_match_a_hand_count() -> None:
    d, t, n_patches, patch_values = 16, 24, 16, 3 * 8 * 8
    lm = {"type": "decoder", "vocab_size": VOCAB, "d_model": d, "n_layers": 1,
          "max_seq_len": 32, "block": {"type": "pre_norm", "token_mixer": {"type": "mha",
          "n_heads": 2}}}  # fmt: skip
    model = NativeVLM(NativeVLMConfig.model_validate({"lm": lm, "image_token_id": IMAGE_ID}))
    ids = torch.tensor([[TOKENIZER.bos_id] + [IMAGE_ID] * n_patches + [5] * (t - 17)])
    got = forward_flops(model, ids, torch.rand(1, 3, 32, 32))
    patch = 2 * n_patches * patch_values * d  # the patch embedding: one linear map per patch
    projections = 4 * 2 * t * d * d  # q, k, v, o
    attention = 2 * 2 * t * t * d  # scores and the weighted sum (over all t x t pairs)
    mlp = 2 * 2 * t * d * (4 * d)  # up and down
    head = 2 * t * d * VOCAB
    assert got == patch + projections + attention + mlp + head


def test_tiny_study_writes_every_figure_side_by_side(tmp_path, capsys) -> None:
    # In this process (workers=1): spawned workers import torch and the plugins afresh (~8 s
    # each, four per study), most of this test's ~40 s. The figures do not depend on the
    # workers (test_study_runner, test_study_tuning); lora-rank's tiny study (marked slow)
    # runs a recipe's dev runs and seeds in spawned workers.
    cfg = apply_overrides(VLMCompareConfig(), [*TINY, "workers=1", f"output_dir={tmp_path}"])
    report = run(cfg)
    study = StudyResult.load(tmp_path)
    assert study.seeds == [0, 1] and sorted(study.figures) == sorted(ARMS)
    for arm in ARMS:
        for seed in study.seeds:
            f = study.figures[arm][seed]
            for key in ("em", "em_count", "em_shape", "em_relation"):
                assert 0.0 <= f[key] <= 1.0
            assert 0 < f["trainable_params"] <= f["total_params"]
            assert f["flops_per_answer"] > 0 and f["step_ms"] > 0 and f["train_cpu_s"] >= 0
    first = {arm: study.figures[arm][0] for arm in ARMS}
    assert [first[a]["visual_tokens"] for a in ARMS] == [16, 8, 0, 16]
    assert first["cross-attn"]["cross_attended_tokens"] == 17
    # the frozen LM under cross-attention keeps its text loss exactly; FLOPs are deterministic
    assert study.figures["cross-attn"][1]["text_loss_rise"] == 0.0
    assert first["native"]["trainable_params"] == first["native"]["total_params"]
    assert (
        first["llava-mlp"]["flops_per_answer"] == study.figures["llava-mlp"][1]["flops_per_answer"]
    )
    assert len(study.claims) == 5 and all(len(c.differences) == 2 for c in study.claims)
    assert study.extras["held_out_questions"] == 12 and study.cpu_time_s > 0
    assert (tmp_path / "vlm-compare.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "| llava-mlp |" in out and "| chance |" in out and "| tuned | candidate |" in out
    assert all(k.startswith("claim ") or k in report for k in report)
    # each approach's lr was chosen on the dev split (tuning seed 100) and trained its runs
    tuned = {t["name"]: t for t in study.extras["tuning"]}
    assert sorted(tuned) == sorted(ARMS)
    for arm, t in tuned.items():
        assert t["seeds"] == [100] and t["candidates"] == [0.001, 0.003]
        assert t["value"] == t["candidates"][max(range(2), key=lambda i: (t["scores"][i], -i))]
        assert {study.figures[arm][s]["lr"] for s in (0, 1)} == {t["value"]}
    with pytest.raises(ValueError, match="tuning_seeds \\[0\\] are also reported seeds"):
        run(apply_overrides(cfg, ["tuning_seeds=[0]"]))
