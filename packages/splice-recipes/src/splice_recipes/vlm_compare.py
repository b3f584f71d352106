"""Recipe ``vlm-compare``: one small LM taught to see four ways, on the same data, as a
study (arms x seeds, paired intervals, a shown / not-shown verdict per claim).

The task (``splice_recipes.grid_scenes``) is built so the approaches can differ: 2-4 small
shapes in the cells of a 4x4 grid, and three questions per image that name objects by
colour: ``count?`` (counting), ``red shape?`` (fine detail inside one 8x8 patch) and
``red left of blue?`` (a spatial relation). Held-out and dev layouts are disjoint from
the training layouts by construction, and asserted.

Shared per seed (built once, every arm starts from copies):

* a small decoder LM pre-trained on text only (the task's ``question?answer`` strings);
* a small ViT: the image tower of a CLIP trained on the shapes scenes (``clip`` recipe).

Arms, each trained for the same steps on the same question stream (stage 1 then stage 2,
cosine-decayed to zero so the final weights are where the run settled):

* ``llava-mlp`` (connector): frozen ViT -> 2-layer MLP -> one LM token per patch; stage 1
  trains the connector only, stage 2 connector + LM (LLaVA's two stages);
* ``qformer`` (connector): the same with a BLIP-2 Q-Former (``qformer_queries`` queries);
* ``cross-attn`` (Flamingo): frozen ViT and frozen LM; only the gated cross-attention
  blocks (before every LM layer) train;
* ``native`` (early fusion): no vision encoder; a patch embedding writes one token per
  8x8 patch into the LM's sequence, and patch embedding and LM train together.

Each approach's learning rate (both stages) is chosen first on the **dev split**: every
candidate of ``lrs`` trains on the tuning seeds (100, never reported, with their own shared
start) and is scored on the dev layouts; the best mean dev exact match wins (ties: the first
listed). The candidates, then the reported seeds, run in ``workers`` processes.

Each run reports held-out exact match (overall and per question kind), its learning rate,
text-only held-out loss of its LM (does it keep its text ability?), visual tokens per
image, trainable parameters, FLOPs per answer (counted with ``FlopCounterMode``) and the
median stage-2 step time.
"""

from __future__ import annotations

import copy
import functools
import math
import resource
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator
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
from splice_recipes.grid_scenes import KINDS, GridScene, GridTask, Layout, check_disjoint
from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    every_arm,
    run_and_report,
    seeds_in_workers,
    t_interval,
    tune_in_workers,
)
from splice_recipes.study.machine import cpu_seconds
from splice_recipes.study.tuning import tuning_extras, with_chosen
from splice_recipes.vlm_costs import forward_flops, text_only_lm

TOKENIZER = CharTokenizer()
IMAGE_ID = TOKENIZER.vocab_size  # one id past the characters: the image placeholder
VOCAB = TOKENIZER.vocab_size + 1
ARMS = ("llava-mlp", "qformer", "cross-attn", "native")
# chance of each question kind: 3 counts, 3 shapes, yes / no
CHANCE = {"count": 1 / 3, "shape": 1 / 3, "relation": 1 / 2}


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
    """One training stage: AdamW steps at a constant learning rate (after a short warmup),
    or decayed to zero along a cosine when ``decay``."""

    steps: PositiveInt
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-3
    decay: bool = False


class VLMCompareConfig(TunedStudyConfig):
    """Settings of ``vlm-compare``.

    Attributes:
        lm: the shared decoder LM (its vocabulary holds the image placeholder id).
        lm_pretrain: text-only pre-training of the LM.
        clip_steps: CLIP training steps that give the shared ViT.
        stage1 / stage2: the two question-answering stages of every arm (same stream).
        qformer_queries: the Q-Former's learned queries (its tokens per image).
        eval_scenes: held-out scenes (distinct layouts), each asked its three questions.
        dev_scenes: dev scenes (distinct layouts of the dev split), scored the same way by
            the candidates of ``lrs``.
        noise: pixel noise of the scenes.
        lrs: the learning rates tried per approach on the dev split (both stages).
        arm_lrs: each approach's learning rate; the study fills it with the dev choice (an
            approach given here is not tuned; one missing trains at its stages' ``lr``).
        tuning_seeds: seeds of the dev-split runs (never among the reported seeds).
        workers: processes that run the candidates, then the seeds (one thread each; the
            figures do not depend on it).
    """

    name: str = "vlm-compare"
    seeds: PositiveInt = 5
    lm: dict[str, Any] = Field(default_factory=_default_lm)
    lm_pretrain: StageConfig = Field(default_factory=lambda: StageConfig(steps=300, lr=3e-3))
    clip_steps: PositiveInt = 200
    stage1: StageConfig = Field(default_factory=lambda: StageConfig(steps=150))
    stage2: StageConfig = Field(default_factory=lambda: StageConfig(steps=400, decay=True))
    qformer_queries: PositiveInt = 8
    eval_scenes: PositiveInt = 200
    dev_scenes: PositiveInt = 100
    noise: float = Field(default=0.05, ge=0.0)
    lrs: list[PositiveFloat] = Field(default_factory=lambda: [3e-4, 1e-3, 3e-3])
    arm_lrs: dict[str, PositiveFloat] = Field(default_factory=dict)
    workers: PositiveInt = 2
    num_threads: PositiveInt = 1  # tiny matmuls: more threads cost more than they gain

    def shared_key(self) -> str:
        """The settings a seed's shared start depends on (JSON): runs that differ only in
        their learning rate share it."""
        return self.model_dump_json(
            include={"lm", "lm_pretrain", "clip_steps", "stage1", "stage2", "noise"}
        )

    @field_validator("precision")
    @classmethod
    def _float32(cls, v: str) -> str:
        if v != "float32":
            raise ValueError(f"precision: vlm-compare trains in float32 only, got {v!r}")
        return v


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

    def factor(s: int) -> float:
        if s < warmup or not stage.decay:
            return min(1.0, (s + 1) / warmup)
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, stage.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
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


# --------------------------------------------------------------------------- the grid task
def qa_batch(scenes: list[GridScene], step: int, tokens_per_image: int) -> dict[str, Tensor]:
    """SFT batch of grid questions; the question kind rotates with the row and the step."""
    qs = [s.questions[(step + i) % len(KINDS)] for i, s in enumerate(scenes)]
    return vision_batch(scenes, qs, tokens_per_image)  # type: ignore[arg-type]


def qa_text_batch(scenes: list[GridScene], kinds: list[int]) -> dict[str, Tensor]:
    """Text-only ``question?answer`` strings (no image), loss on every token."""
    texts = [f"{s.questions[k]}?{s.answers[k]}" for s, k in zip(scenes, kinds)]
    rows = [TOKENIZER.encode(t, bos=True, eos=True) for t in texts]
    return _pad(rows, [[IGNORE_INDEX, *r[1:]] for r in rows])


def every_question_text(scenes: list[GridScene]) -> dict[str, Tensor]:
    kinds = range(len(KINDS))
    return qa_text_batch([s for s in scenes for _ in kinds], [k for _ in scenes for k in kinds])


@torch.no_grad()
def grid_exact_match(model: nn.Module, scenes: list[GridScene]) -> dict[str, float]:
    """Greedy answers to every question of every scene: exact match overall (``em``) and
    per kind (``em_count``, ``em_shape``, ``em_relation``)."""
    n_img = int(model.tokens_per_image)  # type: ignore[arg-type]
    prompts = [prompt_ids(q, n_img) for s in scenes for q in s.questions]
    images = torch.stack([s.image for s in scenes for _ in s.questions])
    truths = [a for s in scenes for a in s.answers]
    sampling = SamplingConfig(max_new_tokens=10, stop_token_ids=[TOKENIZER.eos_id])
    model.eval()
    out = generate(model, prompts, sampling, pad_id=0, context=images)
    answers = [
        TOKENIZER.decode([t for t in row if t != TOKENIZER.eos_id]) for row in out.completions()
    ]
    right = [a.strip() == t for a, t in zip(answers, truths)]
    result = {"em": sum(right) / len(right)}
    for k, kind in enumerate(KINDS):
        hits = right[k :: len(KINDS)]
        result[f"em_{kind}"] = sum(hits) / len(hits)
    return result


@torch.no_grad()
def text_loss(lm: nn.Module, scenes: list[GridScene]) -> float:
    """Held-out text-only loss (every question and answer string of ``scenes``)."""
    lm.eval()
    return float(SFTObjective().loss(lm, every_question_text(scenes)).metrics["ce_loss"])


def flops_per_answer(model: nn.Module, scene: GridScene) -> float:
    """Mean forward FLOPs of one answer, over the scene's three questions: the prompt (image
    included) and the answer with its eos, one forward (what scoring the answer costs)."""
    n_img = int(model.tokens_per_image)  # type: ignore[arg-type]
    total = 0
    for q, a in zip(scene.questions, scene.answers):
        ids = prompt_ids(q, n_img) + TOKENIZER.encode(a, eos=True)
        total += forward_flops(model, torch.tensor([ids]), scene.image.unsqueeze(0))
    return total / len(scene.questions)


class Shared:
    """What one seed's arms share: the text-pre-trained LM, the CLIP ViT, the training
    scenes and their layouts (every arm trains on the same stream)."""

    def __init__(self, config: VLMCompareConfig, task: GridTask, seed: int) -> None:
        seed_everything(seed)
        st = config.lm_pretrain
        lm_scenes = [task.scene("train", i, seed=seed) for i in range(st.steps * st.batch_size)]
        self.lm = build_model(config.lm)
        b = st.batch_size

        def text(step: int) -> dict[str, Tensor]:
            chunk = lm_scenes[step * b : (step + 1) * b]
            return qa_text_batch(chunk, [(step + i) % len(KINDS) for i in range(b)])

        train_stage(self.lm, st, text, seed=seed)
        clip, _, _ = train_clip(ClipStudy(steps=config.clip_steps), "infonce-b32", seed)
        self.vit = clip.vision
        n = (config.stage1.steps + config.stage2.steps) * config.stage2.batch_size
        offset = len(lm_scenes)
        self.scenes = [task.scene("train", offset + i, seed=seed) for i in range(n)]
        self.trained_layouts: set[Layout] = {s.layout for s in lm_scenes + self.scenes}
        self.cost: dict[str, float] = {}  # CPU and wall seconds of this build (set by ``run``)


def scored_scenes(config: VLMCompareConfig) -> tuple[list[GridScene], list[GridScene]]:
    """The held-out scenes (reported) and the dev scenes (choosing the lr), distinct layouts
    each; the splits are disjoint by construction."""
    task = GridTask(noise=config.noise)
    return task.distinct("held_out", config.eval_scenes), task.distinct("dev", config.dev_scenes)


@functools.lru_cache(maxsize=1)  # runs go seed by seed: keep the last seed's start only
def shared_for(key: str, seed: int) -> Shared:
    """Seed ``seed``'s shared start for the settings ``key`` (``shared_key()``), built once
    per process, with its build cost; asserts that no scored layout was trained on."""
    config = VLMCompareConfig.model_validate_json(key)
    cpu, wall = cpu_seconds(), time.perf_counter()
    shared = Shared(config, GridTask(noise=config.noise), seed)
    held_out, dev = scored_scenes(config)
    check_disjoint(shared.trained_layouts, [s.layout for s in held_out + dev])
    shared.cost = {"shared_cpu_s": cpu_seconds() - cpu, "shared_wall_s": time.perf_counter() - wall}
    return shared


def train_arm(config: VLMCompareConfig, arm: str, seed: int, shared: Shared) -> dict[str, Any]:
    """Train approach ``arm`` from seed ``seed``: two stages on the seed's shared stream, at
    the arm's learning rate. Returns the model and its training figures."""
    start = resource.getrusage(resource.RUSAGE_SELF)
    seed_everything(seed + 1)  # the new parts (connector, gates, patch embedding)
    model = build_arm(arm, config, shared.lm, shared.vit)
    n_img = int(model.tokens_per_image)  # type: ignore[arg-type]
    policy1, policy2 = STAGE_POLICY[arm]
    s1, s2 = config.stage1, config.stage2
    if arm in config.arm_lrs:
        lr = config.arm_lrs[arm]
        s1, s2 = s1.model_copy(update={"lr": lr}), s2.model_copy(update={"lr": lr})
    if s1.batch_size != s2.batch_size:
        raise ValueError(f"stage1.batch_size {s1.batch_size} != stage2.batch_size {s2.batch_size}")
    b = s2.batch_size

    def batch(offset: int) -> Any:
        return lambda step: qa_batch(
            shared.scenes[(offset + step) * b : (offset + step + 1) * b], step, n_img
        )

    apply_trainable(model, policy1)
    train_stage(model, s1, batch(0), seed=0)
    apply_trainable(model, policy2)
    trainable, total = count_parameters(model)
    stage2 = train_stage(model, s2, batch(s1.steps), seed=0)
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "model": model,
        "lr": s2.lr,
        "trainable_params": float(trainable),
        "total_params": float(total),
        "step_ms": stage2["step_ms"],
        "train_cpu_s": used.ru_utime + used.ru_stime - start.ru_utime - start.ru_stime,
        "final_loss": stage2["final_loss"],
    }


def run_one(config: VLMCompareConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One reported run: approach ``arm`` at its chosen lr, scored on the held-out scenes."""
    torch.set_num_threads(config.num_threads)
    held_out, _ = scored_scenes(config)
    shared = shared_for(config.shared_key(), seed)
    cpu, wall = cpu_seconds(), time.perf_counter()
    trained = train_arm(config, arm, seed, shared)
    model = trained.pop("model")
    text = text_loss(text_only_lm(model), held_out)
    return {
        **grid_exact_match(model, held_out),
        **trained,
        "text_loss": text,
        "text_loss_rise": text - text_loss(shared.lm, held_out),
        "visual_tokens": float(model.tokens_per_image),  # type: ignore[arg-type]
        "cross_attended_tokens": float(shared.vit.tokens_per_image if arm == "cross-attn" else 0),
        "flops_per_answer": flops_per_answer(model, held_out[0]),
        "run_cpu_s": cpu_seconds() - cpu,
        "run_wall_s": time.perf_counter() - wall,
        **shared.cost,
    }


def dev_run(config: VLMCompareConfig, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One tuning run: approach ``arm`` at ``lr`` from tuning seed ``seed``'s own shared
    start, scored on the dev scenes."""
    torch.set_num_threads(config.num_threads)
    trial = config.model_copy(update={"arm_lrs": {**config.arm_lrs, arm: lr}})
    trained = train_arm(trial, arm, seed, shared_for(config.shared_key(), seed))
    return grid_exact_match(trained["model"], scored_scenes(config)[1])


def choose_lrs(config: VLMCompareConfig) -> list[Tuning]:
    """The learning rate of each approach not in ``arm_lrs``, chosen among ``lrs`` on the
    dev split (the runs in ``config.workers`` processes): the best mean dev exact match over
    the tuning seeds."""
    return tune_in_workers(
        functools.partial(dev_run, config),
        {arm: config.lrs for arm in ARMS if arm not in config.arm_lrs},
        metric="em",
        seeds=config.tuning_seeds,
        workers=config.workers,
    )


def tune_arm(config: VLMCompareConfig, arm: str) -> Tuning:
    """Choose approach ``arm``'s learning rate among ``lrs`` in this process (``choose_lrs``
    for one arm)."""
    cands = {arm: config.lrs}
    return tune_in_workers(
        functools.partial(dev_run, config), cands, metric="em", seeds=config.tuning_seeds,
        workers=1,
    )[0]  # fmt: skip


def study_arms(config: VLMCompareConfig) -> list[str]:
    return list(ARMS)


#: every approach of one seed: one worker's share of the reported runs
run_seed = functools.partial(every_arm, run_one, study_arms)


def claims() -> list[Claim]:
    pt = {"scale": 100, "unit": " pt"}
    return [
        Claim("mlp-beats-qformer", "llava-mlp", "qformer", "em", "higher", **pt,
              text="an MLP connector (a token per patch) answers more held-out questions than "
              "a Q-Former (8 queries)"),
        Claim("mlp-beats-qformer-on-shape", "llava-mlp", "qformer", "em_shape", "higher", **pt,
              text="the MLP connector beats the Q-Former on the fine-detail (shape) questions"),
        Claim("connector-beats-native", "llava-mlp", "native", "em", "higher", **pt,
              text="a connector on a pre-trained ViT beats the native model learning vision "
              "from scratch at equal steps"),
        Claim("connector-beats-cross-attn", "llava-mlp", "cross-attn", "em", "higher", **pt,
              text="visual tokens in a tuned LM's input beat gated cross-attention into a "
              "frozen LM"),
        Claim("cross-attn-keeps-text", "cross-attn", "llava-mlp", "text_loss", "lower",
              text="cross-attention keeps the LM's text ability (lower text-only held-out "
              "loss than the connector's tuned LM)"),
    ]  # fmt: skip


def side_table(result: StudyResult) -> str:
    """Per arm: the lr chosen on dev, exact match (overall and per kind), text loss and its
    rise, each mean ± 95% half-width over seeds; visual tokens, parameters, FLOPs per
    answer, the median wall-clock step time and the CPU time per step."""
    acc = ("em", "em_count", "em_shape", "em_relation")
    lines = [
        "| approach | lr (dev) | held-out EM | count | shape | relation | text loss (rise) "
        "| visual tokens per image | trainable / total params | FLOPs per answer | step (ms) "
        "| CPU ms per step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in result.figures:
        f = result.figures[arm][result.seeds[0]]
        cells = [
            f"{iv.mean:.1%} ± {iv.half_width:.1%}" for iv in (result.interval(arm, m) for m in acc)
        ]
        loss, rise, step = (
            result.interval(arm, m) for m in ("text_loss", "text_loss_rise", "step_ms")
        )
        # CPU time per training step (both stages, batch building included): unlike the
        # wall-clock step time it does not grow with what else the machine runs
        steps = result.config["stage1"]["steps"] + result.config["stage2"]["steps"]
        cpu_step = t_interval([1000 * v / steps for v in result.values(arm, "train_cpu_s")])
        tokens = f"{int(f['visual_tokens'])}"
        if f["cross_attended_tokens"]:
            tokens += f" (+{int(f['cross_attended_tokens'])} cross-attended)"
        lines.append(
            f"| {arm} | {f['lr']:g} | {' | '.join(cells)} | {loss.mean:.3f} ({rise.mean:+.3f} ± "
            f"{rise.half_width:.3f}) | {tokens} | {int(f['trainable_params']):,} / "
            f"{int(f['total_params']):,} | {f['flops_per_answer'] / 1e6:.2f} M | "
            f"{step.mean:.1f} ± {step.half_width:.1f} | {cpu_step.mean:.1f} ± "
            f"{cpu_step.half_width:.1f} |"
        )
    chance = (CHANCE["count"] + CHANCE["shape"] + CHANCE["relation"]) / 3
    lines.append(
        f"| chance | | {chance:.1%} | {CHANCE['count']:.1%} | {CHANCE['shape']:.1%} | "
        f"{CHANCE['relation']:.1%} | | | | | | |"
    )
    return "\n".join(lines)


def plot_side_by_side(result: StudyResult, path: Path) -> None:
    """Four panels per approach: held-out exact match (mean and 95% interval, chance
    dashed), visual tokens per image, trainable parameters, FLOPs per answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(result.figures)
    x = list(range(len(arms)))
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    ems = [result.interval(a, "em") for a in arms]
    axes[0].bar(x, [100 * iv.mean for iv in ems], color="C0")
    axes[0].errorbar(
        x,
        [100 * iv.mean for iv in ems],
        yerr=[100 * iv.half_width for iv in ems],
        fmt="none",
        color="k",
        capsize=4,
    )
    for i, a in enumerate(arms):
        axes[0].scatter(
            [i] * len(result.seeds),
            [100 * v for v in result.values(a, "em")],
            color="0.3",
            s=10,
            zorder=3,
        )
    axes[0].axhline(100 * sum(CHANCE.values()) / 3, color="k", ls="--", lw=0.8, label="chance")
    axes[0].set_ylabel("held-out exact match (%)")
    axes[0].legend(fontsize=7)
    first = {a: result.figures[a][result.seeds[0]] for a in arms}
    for ax, key, label in (
        (axes[1], "visual_tokens", "visual tokens per image in the LM"),
        (axes[2], "trainable_params", "trainable parameters"),
        (axes[3], "flops_per_answer", "forward FLOPs per answer"),
    ):
        ax.bar(x, [first[a][key] for a in arms], color="C1")
        ax.set_ylabel(label)
    for ax in axes:
        ax.set_xticks(x, arms, rotation=20, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)  # fmt: skip


def run(config: VLMCompareConfig) -> dict[str, Any]:
    """Choose each approach's lr on the dev split, train every approach for every seed;
    print the dev choice, the side-by-side table and each claim."""
    torch.set_num_threads(config.num_threads)
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    held_out, dev = scored_scenes(config)
    tunings = choose_lrs(config)
    for t in tunings:
        print(f"{t.name}: lr {t.value:g} chosen on the dev split (dev exact match "
              f"{t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip
    chosen = with_chosen(config, "arm_lrs", tunings)

    def extras(result: StudyResult) -> dict[str, Any]:
        plot = Path(config.run_dir()) / "vlm-compare.png"
        plot_side_by_side(result, plot)
        return {
            **tuning_extras(tunings, scale=100, unit="%"),
            "side_table": side_table(result),
            "plot": plot.name,
            "held_out_questions": len(held_out) * len(KINDS),
            "dev_questions": len(dev) * len(KINDS),
        }

    def notes(result: StudyResult) -> list[str]:
        return [
            f"vlm-compare: {len(held_out) * len(KINDS)} held-out questions ({len(held_out)} "
            f"distinct layouts, none trained on); lrs chosen on {len(dev) * len(KINDS)} dev "
            f"questions; {result.cpu_time_s or 0:.0f} CPU s (tuning, shared builds and runs)"
        ]

    return run_and_report(
        chosen,
        arms=list(ARMS),
        run_one=seeds_in_workers(
            run_seed, chosen, lambda arm, seed, folder: run_one(chosen, arm, seed, folder)
        ),
        claims=claims(),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
        notes=notes,
    )


recipe = Recipe(
    name="vlm-compare",
    description="one small LM taught to see four ways (LLaVA MLP, Q-Former, cross-attention, "
    "native) on counting, fine-detail and spatial questions, over seeds: exact match claims "
    "with intervals, text ability, visual tokens, trainable parameters, FLOPs per answer",
    config=VLMCompareConfig,
    run=run,
)

__all__ = [
    "ARMS",
    "VLMCompareConfig",
    "build_arm",
    "flops_per_answer",
    "grid_exact_match",
    "recipe",
    "run",
    "side_table",
    "vision_batch",
    "vqa_exact_match",
]
