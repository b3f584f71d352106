"""Recipe ``clip``: train a tiny CLIP on the synthetic shapes and measure what it learned.

Images are splice-vision's generated scenes (``"2 red circles on the left"``), texts their
captions, character-tokenized. Each batch holds scenes with pairwise different captions,
so no positive pair is also a negative. Two rows are trained with the same budget: the
CLIP InfoNCE loss and the SigLIP sigmoid loss. Both are scored on held-out scenes:

* **zero-shot accuracy**: 12-way colour+shape classification from the text prompts
  ``"a red circle"``, ... — a phrasing never seen in training;
* **recall@1/5**: image->text and text->image retrieval among ``retrieval_pairs``
  held-out pairs; a retrieved caption counts when it is the query's caption (captions
  repeat, so "same caption" is the right answer, not only the same row).
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from splice.config import SpliceConfig
from splice.data.tokenizer import CharTokenizer
from splice.recipe import Recipe
from splice.training.trainer import seed_everything
from splice_vision.clip import CLIP, recall_at_k, zero_shot_classify
from splice_vision.configs import CLIPConfig, ShapesTaskConfig, TextEncoderConfig, ViTConfig
from splice_vision.data import Scene, ShapesTask, all_labels
from torch import Tensor

TOKENIZER = CharTokenizer()


def _default_model() -> CLIPConfig:
    return CLIPConfig(
        vision=ViTConfig(
            image_size=32, patch_size=8, d_model=64, n_layers=2, n_heads=4,
            pre_norm=True, conv_bias=False,
        ),
        text=TextEncoderConfig(
            vocab_size=TOKENIZER.vocab_size, d_model=64, n_layers=2, n_heads=4, max_len=32,
            eos_token_id=TOKENIZER.eos_id,
        ),
        embed_dim=64,
        # SigLIP's -10 starts the positive-pair probability near 1/B for B ~ 20k; for 32
        # pairs -log(32) ~ -3.5 is the matching prior.
        init_logit_bias=-3.5,
    )  # fmt: skip


class ClipRecipeConfig(SpliceConfig):
    """Settings of the ``clip`` recipe.

    Attributes:
        model: the dual encoder (its ``loss`` is overridden per row by ``losses``).
        losses: the rows of the table: ``infonce`` and/or ``siglip``.
        steps / batch_size / lr: AdamW training budget of each row.
        eval_images: held-out scenes for zero-shot accuracy.
        retrieval_pairs: held-out image-caption pairs for recall@k.
    """

    name: str = "clip"
    seed: int = 0
    model: CLIPConfig = Field(default_factory=_default_model)
    task: ShapesTaskConfig = Field(default_factory=ShapesTaskConfig)
    losses: list[str] = Field(default_factory=lambda: ["infonce", "siglip"])
    steps: PositiveInt = 300
    batch_size: PositiveInt = Field(default=32, le=72)  # 72 distinct captions exist
    lr: PositiveFloat = 2e-3
    eval_images: PositiveInt = 240
    retrieval_pairs: PositiveInt = 64
    num_threads: PositiveInt = 1  # tiny matmuls: more threads cost more than they gain
    output_dir: str | None = None


def tokenize(texts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids ``(B, T)`` ending in eos, and the attention mask ``(B, T)``."""
    rows = [TOKENIZER.encode(t, eos=True) for t in texts]
    width = max(len(r) for r in rows)
    if width > max_len:
        raise ValueError(f"text of {width} tokens exceeds the text encoder's max_len {max_len}")
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def images_of(scenes: list[Scene]) -> Tensor:
    return torch.stack([s.image for s in scenes])  # (B, 3, H, W)


def train_clip(config: ClipRecipeConfig, loss: str) -> tuple[CLIP, dict[str, Any]]:
    """Train one CLIP with ``loss``; returns the model and its training figures."""
    seed_everything(config.seed)
    model = CLIP(config.model.model_copy(update={"loss": loss}))
    task = ShapesTask(config.task)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1
    )
    step_times, losses, start = [], [], 0
    t0 = time.perf_counter()
    model.train()
    for _ in range(config.steps):
        scenes = task.distinct_captions("train", config.batch_size, seed=config.seed, start=start)
        start += config.batch_size
        ids, mask = tokenize([s.caption for s in scenes], config.model.text.max_len)
        t = time.perf_counter()
        out = model(images_of(scenes), ids, mask)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        step_times.append(time.perf_counter() - t)
        losses.append(float(out.loss.detach()))
    return model, {
        "train_time_s": time.perf_counter() - t0,
        "step_ms": 1000 * median(step_times),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
    }


@torch.no_grad()
def evaluate_clip(model: CLIP, config: ClipRecipeConfig) -> dict[str, float]:
    """Zero-shot accuracy and recall@1/5 on held-out scenes."""
    model.eval()
    task = ShapesTask(config.task)
    labels = all_labels()
    scenes = task.sample("held_out", config.eval_images, seed=config.seed)
    class_ids, class_mask = tokenize([f"a {label}" for label in labels], config.model.text.max_len)
    pred = zero_shot_classify(model, images_of(scenes), class_ids, class_mask)
    truth = torch.tensor([labels.index(s.label) for s in scenes])
    pairs = scenes[: config.retrieval_pairs]
    ids, mask = tokenize([s.caption for s in pairs], config.model.text.max_len)
    img, txt = model.encode_image(images_of(pairs)), model.encode_text(ids, mask)
    captions = [s.caption for s in pairs]
    match = torch.tensor([[a == b for b in captions] for a in captions])
    return {
        "zero_shot_acc": float((pred == truth).float().mean()),
        **recall_at_k(img, txt, match=match),
    }


def run(config: ClipRecipeConfig) -> dict[str, Any]:
    """Train one CLIP per loss, evaluate each, print and return the table."""
    torch.set_num_threads(config.num_threads)
    results: dict[str, dict[str, Any]] = {}
    for loss in config.losses:
        model, figures = train_clip(config, loss)
        results[loss] = {**figures, **evaluate_clip(model, config)}
    table = format_table(results)
    print(
        f"clip: {config.steps} steps x {config.batch_size} pairs per row; zero-shot over "
        f"{len(all_labels())} classes on {config.eval_images} held-out scenes (chance "
        f"{1 / len(all_labels()):.3f}); recall among {config.retrieval_pairs} held-out pairs"
    )
    print(table)
    if config.output_dir is not None:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "clip.md").write_text(table + "\n")
    return {"name": config.name, **results, "table": table}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| loss | train time (s) | step (ms) | final loss | zero-shot acc | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['train_time_s']:.1f} | {r['step_ms']:.1f} | {r['final_loss']:.3f} | "
            f"{r['zero_shot_acc']:.3f} | {r['i2t_r1']:.3f} | {r['i2t_r5']:.3f} | "
            f"{r['t2i_r1']:.3f} | {r['t2i_r5']:.3f} |"
        )
    return "\n".join(lines)


recipe = Recipe(
    name="clip",
    description="Tiny CLIP (InfoNCE and SigLIP) on synthetic shapes: zero-shot accuracy, recall@1/5.",
    config=ClipRecipeConfig,
    run=run,
)

__all__ = [
    "ClipRecipeConfig",
    "evaluate_clip",
    "format_table",
    "recipe",
    "run",
    "tokenize",
    "train_clip",
]
