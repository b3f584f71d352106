"""Recipe ``vlm-compare``: one small LM taught to see three ways, on the same data.

Shared starting point (built once):

* a small decoder LM pre-trained on text only (captions and question/answer strings of the
  synthetic shapes, no image);
* a small ViT: the image tower of a CLIP trained on the same scenes (``clip`` recipe code).

Then every arm trains two stages with the same steps, batch and learning rate — stage 1
on image -> caption, stage 2 on image + question -> answer — and is scored by greedy
exact match on held-out scenes (four questions each: colour, shape, count, side):

* ``llava-mlp`` (connector): frozen ViT -> 2-layer MLP projector -> LM; stage 1 trains the
  connector only, stage 2 connector + LM (LLaVA's two stages);
* ``qformer`` (connector): the same with a BLIP-2-style Q-Former (8 learned queries);
* ``cross-attn`` (Flamingo): frozen ViT and frozen LM; only the gated cross-attention
  blocks (inserted before every LM layer) train, in both stages;
* ``native`` (early fusion): no vision encoder; a patch embedding writes one token per
  8x8 patch into the LM's sequence, and the patch embedding and the LM train together.

The table reports VQA exact match (overall and per question), trainable and total
parameters (stage 2), the median stage-2 step time, and the tokens each image adds to the
LM's sequence.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from splice.config import SpliceConfig
from splice.data.tokenizer import CharTokenizer
from splice.generation.sampling import SamplingConfig, generate
from splice.models.build import build_model
from splice.objectives.sft import SFTObjective
from splice.recipe import Recipe
from splice.training.trainer import seed_everything
from splice_vision.configs import FlamingoConfig, LlavaConfig, NativeVLMConfig
from splice_vision.data import QUESTIONS, Scene, ShapesTask
from splice_vision.flamingo import FlamingoVLM
from splice_vision.freezing import apply_trainable, count_parameters
from splice_vision.placeholders import IGNORE_INDEX, expand_image_tokens
from splice_vision.vlm import LlavaVLM, NativeVLM
from torch import Tensor, nn

from splice_recipes.clip import ClipStudy, train_clip

TOKENIZER = CharTokenizer()
IMAGE_ID = TOKENIZER.vocab_size  # one id past the characters: the image placeholder
VOCAB = TOKENIZER.vocab_size + 1
ARMS = ("llava-mlp", "qformer", "cross-attn", "native")


def _default_lm() -> dict[str, Any]:
    return {
        "type": "decoder",
        "vocab_size": VOCAB,
        "d_model": 64,
        "n_layers": 2,
        "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
    }


class StageConfig(SpliceConfig):
    """One training stage: AdamW steps at a constant learning rate (after a short warmup)."""

    steps: PositiveInt
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3


class VLMCompareConfig(SpliceConfig):
    """Settings of ``vlm-compare``.

    Attributes:
        lm: the shared decoder LM (its vocabulary holds the image placeholder id).
        lm_pretrain: text-only pre-training of the LM.
        clip_steps: CLIP training steps that give the shared ViT.
        stage1 / stage2: image->caption and image+question->answer stages of every arm.
        arms: which approaches to train (``llava-mlp``, ``qformer``, ``cross-attn``, ``native``).
        eval_scenes: held-out scenes; each is asked all four questions.
    """

    name: str = "vlm-compare"
    seed: int = 0
    lm: dict[str, Any] = Field(default_factory=_default_lm)
    lm_pretrain: StageConfig = Field(default_factory=lambda: StageConfig(steps=300, lr=3e-3))
    clip_steps: PositiveInt = 200
    stage1: StageConfig = Field(default_factory=lambda: StageConfig(steps=150))
    stage2: StageConfig = Field(default_factory=lambda: StageConfig(steps=400))
    arms: list[str] = Field(default_factory=lambda: list(ARMS))
    qformer_queries: PositiveInt = 8
    eval_scenes: PositiveInt = 60
    num_threads: PositiveInt = 1
    output_dir: str | None = None


# --------------------------------------------------------------------------- data
def _pad(rows: list[list[int]], labels: list[list[int]]) -> dict[str, Tensor]:
    """Right-pad ids (with 0) and labels (with -100); attention mask 1 on real tokens."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    lab = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels)):
        ids[i, : len(r)], lab[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(lb), 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


def prompt_ids(question: str | None, tokens_per_image: int) -> list[int]:
    """``bos [image tokens] [question?]``: the prompt of one example."""
    ids = [TOKENIZER.bos_id]
    if tokens_per_image:
        ids += expand_image_tokens([IMAGE_ID], IMAGE_ID, tokens_per_image)
    if question is not None:
        ids += TOKENIZER.encode(f"{question}?")
    return ids


def vision_batch(
    scenes: list[Scene], questions: list[str | None], tokens_per_image: int
) -> dict[str, Tensor]:
    """SFT batch: loss on the answer (or caption) and eos only, never on image tokens."""
    rows, labels = [], []
    for scene, q in zip(scenes, questions):
        prompt = prompt_ids(q, tokens_per_image)
        target = TOKENIZER.encode(scene.caption if q is None else scene.answer(q), eos=True)
        rows.append(prompt + target)
        labels.append([IGNORE_INDEX] * len(prompt) + target)
    batch = _pad(rows, labels)
    batch["images"] = torch.stack([s.image for s in scenes])
    return batch


def text_batch(scenes: list[Scene], step: int) -> dict[str, Tensor]:
    """Text-only LM batch: captions and ``question?answer`` strings, loss on every token."""
    texts = [
        s.caption if (i + step) % 2 == 0 else f"{QUESTIONS[i % 4]}?{s.answer(QUESTIONS[i % 4])}"
        for i, s in enumerate(scenes)
    ]
    rows = [TOKENIZER.encode(t, bos=True, eos=True) for t in texts]
    return _pad(rows, [[IGNORE_INDEX, *r[1:]] for r in rows])


# --------------------------------------------------------------------------- training
def train_stage(
    model: nn.Module, stage: StageConfig, make_batch: Any, *, seed: int
) -> dict[str, float]:
    """AdamW over the trainable parameters with SFT loss; returns time figures."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0)
    warmup = max(1, stage.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    sft = SFTObjective()
    model.train()
    times, losses = [], []
    t0 = time.perf_counter()
    for step in range(stage.steps):
        batch = make_batch(step)
        t = time.perf_counter()
        out = sft.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        times.append(time.perf_counter() - t)
        losses.append(out.metrics["ce_loss"])
    return {
        "time_s": time.perf_counter() - t0,
        "step_ms": 1000 * median(times),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
    }


def train_scenes(task: ShapesTask, step: int, n: int, seed: int, offset: int) -> list[Scene]:
    """Training scenes of batch ``step`` (``n`` per batch, from ``offset``)."""
    return [task.scene("train", offset + step * n + i, seed=seed) for i in range(n)]


def pretrain_lm(config: VLMCompareConfig, task: ShapesTask) -> nn.Module:
    """The shared LM: text-only training on captions and question/answer strings."""
    seed_everything(config.seed)
    lm = build_model(config.lm)
    st = config.lm_pretrain
    train_stage(
        lm,
        st,
        lambda step: text_batch(train_scenes(task, step, st.batch_size, config.seed, 0), step),
        seed=config.seed,
    )
    return lm


def build_arm(name: str, config: VLMCompareConfig, lm: nn.Module, vit: nn.Module) -> nn.Module:
    """A fresh model of arm ``name`` around copies of the shared LM and ViT."""
    lm, vit = copy.deepcopy(lm), copy.deepcopy(vit)
    enc = vit.config.model_dump()
    if name in ("llava-mlp", "qformer"):
        connector: dict[str, Any] = (
            {"type": "mlp_projector"}
            if name == "llava-mlp"
            else {"type": "qformer", "n_queries": config.qformer_queries, "d_model": 64}
        )
        cfg = LlavaConfig.model_validate(
            {"encoder": enc, "connector": connector, "lm": config.lm, "image_token_id": IMAGE_ID}
        )
        return LlavaVLM(cfg, encoder=vit, lm=lm)
    if name == "cross-attn":
        cfg_f = FlamingoConfig.model_validate({"encoder": enc, "lm": config.lm, "cross_every": 1})
        return FlamingoVLM(cfg_f, encoder=vit, lm=lm)
    if name == "native":
        cfg_n = NativeVLMConfig.model_validate(
            {"lm": config.lm, "image_token_id": IMAGE_ID, "patch_size": 8}
        )
        return NativeVLM(cfg_n, lm=lm)
    raise ValueError(f"unknown arm {name!r}; expected one of {ARMS}")


STAGE_POLICY = {
    "llava-mlp": ("connector", "connector+lm"),
    "qformer": ("connector", "connector+lm"),
    "cross-attn": ("cross_attention", "cross_attention"),
    "native": ("lm", "lm"),
}


@torch.no_grad()
def vqa_exact_match(model: nn.Module, scenes: list[Scene]) -> dict[str, float]:
    """Greedy answers to every question of every scene; exact match overall and per question."""
    n_img = int(model.tokens_per_image)  # type: ignore[arg-type]
    prompts, images, truths, qs = [], [], [], []
    for s in scenes:
        for q in QUESTIONS:
            prompts.append(prompt_ids(q, n_img))
            images.append(s.image)
            truths.append(s.answer(q))
            qs.append(q)
    sampling = SamplingConfig(max_new_tokens=8, stop_token_ids=[TOKENIZER.eos_id])
    out = generate(model, prompts, sampling, pad_id=0, context=torch.stack(images))
    answers = [
        TOKENIZER.decode([t for t in row if t != TOKENIZER.eos_id]) for row in out.completions()
    ]
    right = [a.strip() == t for a, t in zip(answers, truths)]
    result = {"vqa_em": sum(right) / len(right)}
    for q in QUESTIONS:
        hits = [r for r, qq in zip(right, qs) if qq == q]
        result[f"em_{q}"] = sum(hits) / len(hits)
    return result


def run_arm(
    name: str, config: VLMCompareConfig, lm: nn.Module, vit: nn.Module, task: ShapesTask
) -> dict[str, Any]:
    """Train arm ``name`` (two stages) and score it on held-out scenes."""
    seed_everything(config.seed + 1)
    model = build_arm(name, config, lm, vit)
    n_img = int(model.tokens_per_image)  # type: ignore[arg-type]
    policy1, policy2 = STAGE_POLICY[name]
    s1, s2 = config.stage1, config.stage2

    apply_trainable(model, policy1)
    stage1 = train_stage(
        model,
        s1,
        lambda step: vision_batch(
            train_scenes(task, step, s1.batch_size, config.seed, 10**6),
            [None] * s1.batch_size,
            n_img,
        ),
        seed=config.seed,
    )

    def qa(step: int) -> dict[str, Tensor]:
        scenes = train_scenes(task, step, s2.batch_size, config.seed, 2 * 10**6)
        return vision_batch(scenes, [QUESTIONS[(step + i) % 4] for i in range(len(scenes))], n_img)

    apply_trainable(model, policy2)
    trainable, total = count_parameters(model)
    stage2 = train_stage(model, s2, qa, seed=config.seed)
    scores = vqa_exact_match(model, task.sample("held_out", config.eval_scenes, seed=config.seed))
    return {
        **scores,
        "trainable": trainable,
        "total": total,
        "step_ms": stage2["step_ms"],
        "train_time_s": stage1["time_s"] + stage2["time_s"],
        "final_loss": stage2["final_loss"],
        "tokens_per_image": n_img,
        "context_tokens": vit.tokens_per_image if name == "cross-attn" else 0,  # type: ignore[union-attr]
    }


def run(config: VLMCompareConfig) -> dict[str, Any]:
    """Build the shared LM and ViT, train and score every arm, print and return the table."""
    torch.set_num_threads(config.num_threads)
    task = ShapesTask()
    t0 = time.perf_counter()
    lm = pretrain_lm(config, task)
    clip, _, _ = train_clip(ClipStudy(steps=config.clip_steps), "infonce-b32", config.seed)
    shared_s = time.perf_counter() - t0
    results = {name: run_arm(name, config, lm, clip.vision, task) for name in config.arms}
    table = format_table(results)
    print(
        f"vlm-compare: shared LM ({config.lm_pretrain.steps} text steps) and ViT ({config.clip_steps} "
        f"CLIP steps) built in {shared_s:.0f} s; each arm {config.stage1.steps} caption + "
        f"{config.stage2.steps} QA steps x {config.stage2.batch_size}; exact match on "
        f"{config.eval_scenes} held-out scenes x {len(QUESTIONS)} questions"
    )
    print(table)
    if config.output_dir is not None:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "vlm_compare.md").write_text(table + "\n")
    return {"name": config.name, **results, "table": table}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| approach | VQA EM | color | shape | count | side | trainable / total params | step (ms) | tokens per image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        tokens = (
            f"0 (+{r['context_tokens']} cross-attended)"
            if r["context_tokens"]
            else str(r["tokens_per_image"])
        )
        lines.append(
            f"| {name} | {r['vqa_em']:.3f} | {r['em_color']:.2f} | {r['em_shape']:.2f} | "
            f"{r['em_count']:.2f} | {r['em_side']:.2f} | {r['trainable']:,} / {r['total']:,} | "
            f"{r['step_ms']:.0f} | {tokens} |"
        )
    return "\n".join(lines)


recipe = Recipe(
    name="vlm-compare",
    description="One small LM taught to see three ways (connector, cross-attention, native): VQA exact match, params, step time.",
    config=VLMCompareConfig,
    run=run,
)

__all__ = [
    "ARMS",
    "VLMCompareConfig",
    "build_arm",
    "format_table",
    "recipe",
    "run",
    "vision_batch",
    "vqa_exact_match",
]
