"""Recipe ``vlm-grpo``: GRPO on a LLaVA-style VLM, rewarded by rule-verified answers about
synthetic images ("Multimodality GRPO").

Per seed, one model (a ViT, a 2-layer MLP connector and a decoder LM, ``LlavaVLM``):

1. **SFT start.** Everything trains on a fixed pool of ``sft_scenes`` training scenes, each
   asked its four questions (colour, shape, count, side), image + question -> answer, for
   ``sft.steps`` steps: long enough that held-out exact match has stopped rising (the dev
   curve), not to perfection (shape, the hard question, stays well below 100%).
2. **GRPO.** LoRA on the language model and the connector (every base weight frozen); each
   step takes ``prompts_per_step`` fresh training scenes (never in the SFT pool), one
   question each, samples ``group_size`` answers per prompt at temperature 1, and rewards
   each with ``answer_match`` against the scene's true answer (the rule verifier; no
   labelled completion is ever trained on). It runs on the core ``Trainer`` (its online
   step: checkpoints, ``metrics.jsonl``, gradient clipping, the run's precision), fed by the
   core's ``PromptBatches`` over ``SceneQuestions``, whose examples carry their scene's image
   (``Example.model_inputs``). The images travel with the rollout: generation conditions on
   them, and the policy's and the reference's (adapters off = the SFT start) log-probs are
   computed with the same images (``splice.rl.rollout``'s per-prompt model inputs).

Both arms are scored by greedy exact match on the same held-out scenes (the ``held_out``
split, each scene asked all four questions, every image distinct and none seen in training:
asserted by hashing every image). The arms of a seed are paired: ``grpo`` starts from that
seed's ``sft`` model. Hyperparameters were chosen on ``split="dev"`` (training-split scenes
that neither stage trains on), never on the reported held-out scenes. On seed 0's dev
scenes (240 questions), SFT exact match was 0.71 / 0.80 / 0.81 / 0.79 / 0.78 after
200 / 300 / 400 / 500 / 600 steps (the training loss still falling: the pool is memorised),
so SFT stops at 400; 200 GRPO steps then gave +5.0 points with LoRA on the LM and the
connector at lr 3e-3 and beta 0.04, +3.7 on the LM only, +0.8 at lr 1e-2, -5.8 at lr 1e-2
with beta 0.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from splice.data.examples import Example
from splice.generation.sampling import SamplingConfig
from splice.recipe import Recipe
from splice.registry import get_registry
from splice.rl.rollout import PromptBatches, Rollouts
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.metrics import read_metrics
from splice.training.stream import derive_seed
from splice.training.trainer import Trainer, seed_everything
from splice_lora.configs import LoRAConfig
from splice_vision.configs import LlavaConfig
from splice_vision.data import QUESTIONS, Scene, ShapesTask
from splice_vision.freezing import count_parameters
from splice_vision.vlm import LlavaVLM
from torch import Tensor

from splice_recipes.study import (
    Claim,
    StudyConfig,
    StudyResult,
    every_arm,
    run_and_report,
    seeds_in_workers,
)
from splice_recipes.vlm_compare import (
    IMAGE_ID,
    TOKENIZER,
    VOCAB,
    StageConfig,
    prompt_ids,
    train_stage,
    vision_batch,
    vqa_exact_match,
)

ARMS = ("sft", "grpo")
#: Where each stream starts in the ``train`` split (disjoint index ranges).
GRPO_OFFSET = 10**6
DEV_OFFSET = 5 * 10**6


class VLMGRPOConfig(StudyConfig):
    """Settings of ``vlm-grpo``.

    Attributes:
        d_model / n_layers / n_heads: the decoder LM; ``vit_width`` the 1-layer ViT's.
        sft_scenes: the fixed SFT pool (each scene asked all four questions).
        sft: SFT steps, batch and learning rate (everything trains).
        lora_rank: LoRA rank on every linear layer of the LM during GRPO.
        lora_on: where the adapters go: the LM, or the LM and the connector.
        grpo_steps / prompts_per_step / group_size: GRPO rollouts (``P`` prompts x ``G``).
        grpo_lr: AdamW learning rate of the LoRA weights.
        beta: KL weight to the reference (the SFT start: the adapters switched off).
        max_new_tokens: answer budget (the longest answer, ``triangle``, is 8 characters).
        eval_scenes: scored scenes, each asked all four questions.
        split: ``held_out`` (reported) or ``dev`` (tuning: unseen training-split scenes).
        workers: seeds run at once, one process each (every run uses one thread; the
            figures do not depend on it).
    """

    name: str = "vlm-grpo"
    seeds: PositiveInt = 5
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    vit_width: PositiveInt = 32
    sft_scenes: PositiveInt = 128
    sft: StageConfig = Field(default_factory=lambda: StageConfig(steps=400, lr=2e-3))
    lora_rank: PositiveInt = 8
    lora_on: Literal["lm", "lm+connector"] = "lm+connector"
    grpo_steps: PositiveInt = 200
    prompts_per_step: PositiveInt = 16
    group_size: PositiveInt = 8
    grpo_lr: PositiveFloat = 3e-3
    beta: NonNegativeFloat = 0.04
    max_new_tokens: PositiveInt = 10
    eval_scenes: PositiveInt = 100
    split: Literal["held_out", "dev"] = "held_out"
    num_threads: PositiveInt = 1
    workers: PositiveInt = 2


# --------------------------------------------------------------------------- data
def image_hash(image: Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


def check_disjoint(scored: list[Scene], trained_images: Iterable[Tensor]) -> None:
    """Every scored image distinct, and none of them an image trained on.

    Raises:
        ValueError: naming how many scored images repeat or were trained on.
    """
    scored_hashes = [image_hash(s.image) for s in scored]
    if len(set(scored_hashes)) != len(scored_hashes):
        raise ValueError(f"{len(scored_hashes) - len(set(scored_hashes))} scored images repeat")
    seen = set(scored_hashes) & {image_hash(image) for image in trained_images}
    if seen:
        raise ValueError(f"{len(seen)} scored images were also trained on")


def sft_pool(task: ShapesTask, config: VLMGRPOConfig, seed: int) -> list[Scene]:
    return [task.scene("train", i, seed=seed) for i in range(config.sft_scenes)]


def scored_scenes(task: ShapesTask, config: VLMGRPOConfig, seed: int) -> list[Scene]:
    if config.split == "dev":
        return [task.scene("train", DEV_OFFSET + i, seed=seed) for i in range(config.eval_scenes)]
    return task.sample("held_out", config.eval_scenes, seed=seed)


class SceneQuestions:
    """GRPO's prompts as a task (``sample(split, n, seed=...)`` of ``Example``s): a draw of
    ``n`` is ``n`` fresh training scenes of its own seed (indices from ``GRPO_OFFSET``, never
    the SFT pool's or the dev range's), scene ``i`` asked question ``(seed + i) % 4``, the
    scene's true answer as the reference and its image as the example's ``model_inputs``."""

    def __init__(self) -> None:
        self.shapes = ShapesTask()

    def sample(self, split: str, n: int, *, seed: int = 0) -> list[Example]:
        if split != "train":
            raise ValueError(f"GRPO trains on the 'train' split only, got {split!r}")
        scenes = [self.shapes.scene("train", GRPO_OFFSET + i, seed=seed) for i in range(n)]
        questions = [QUESTIONS[(seed + i) % len(QUESTIONS)] for i in range(n)]
        return [
            Example(f"{q}?", s.answer(q), s.answer(q), model_inputs={"images": s.image})
            for s, q in zip(scenes, questions)
        ]


def grpo_prompts(config: VLMGRPOConfig, seed: int, tokens_per_image: int) -> PromptBatches:
    """The GRPO prompt stream: the core's ``PromptBatches`` over ``SceneQuestions``, so batch
    ``k`` (a pure function of ``(seed, k)``) carries ``images (P, 3, H, W)`` beside the
    prompts, and each prompt's ids are ``bos [image tokens] question?``."""
    return PromptBatches(
        SceneQuestions(),
        TOKENIZER,
        prompts_per_step=config.prompts_per_step,
        seed=derive_seed(seed, "vlm-grpo-prompts"),
        encode=lambda e: prompt_ids(e.prompt[:-1], tokens_per_image),
    )


# --------------------------------------------------------------------------- model
def build_vlm(config: VLMGRPOConfig) -> LlavaVLM:
    """ViT (1 layer, 8x8 patches) -> MLP projector -> decoder LM, everything trainable."""
    lm = {
        "type": "decoder", "vocab_size": VOCAB, "d_model": config.d_model,
        "n_layers": config.n_layers, "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": config.n_heads}},
    }  # fmt: skip
    vit = {"type": "vit", "patch_size": 8, "d_model": config.vit_width, "n_heads": 4, "n_layers": 1}
    cfg = LlavaConfig.model_validate(
        {
            "encoder": vit,
            "connector": {"type": "mlp_projector"},
            "lm": lm,
            "image_token_id": IMAGE_ID,
            "trainable": "all",
        }
    )
    return LlavaVLM(cfg)


def add_lora(model: LlavaVLM, rank: int, parts: str) -> None:
    """Freeze every weight, then put LoRA on the linear layers of the LM (and, with
    ``parts="lm+connector"``, of the connector): the adapters are the only trainables, so
    the reference (adapters off) is exactly the SFT start."""
    model.requires_grad_(False)
    adapter = get_registry().build(
        "adapter", LoRAConfig(r=rank, alpha=2 * rank, targets="all-linear")
    )
    adapter.apply(model.lm)
    if parts == "lm+connector":
        adapter.apply(model.connector)


# --------------------------------------------------------------------------- stages
def pool_pair(k: int, per_pass: int, seed: int) -> int:
    """The ``k``-th (scene, question) pair SFT trains on: pass after pass over the pool's
    ``per_pass`` pairs, each pass in its own seeded order."""
    epoch, i = divmod(k, per_pass)
    order = torch.randperm(per_pass, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return int(order[i])


_SFT_CACHE: dict[tuple[str, int], tuple[LlavaVLM, dict[str, float]]] = {}


def sft_start(config: VLMGRPOConfig, seed: int) -> tuple[LlavaVLM, dict[str, float]]:
    """Seed ``seed``'s SFT model and its training figures (trained once per study run)."""
    key = (config.model_dump_json(), seed)
    if key not in _SFT_CACHE:
        seed_everything(seed)
        task = ShapesTask()
        model = build_vlm(config)
        n_img = model.tokens_per_image
        pool = sft_pool(task, config, seed)
        st = config.sft
        per_pass = len(pool) * len(QUESTIONS)

        def batch(step: int) -> dict[str, Tensor]:
            picks = [
                pool_pair(k, per_pass, seed)
                for k in range(step * st.batch_size, (step + 1) * st.batch_size)
            ]
            scenes = [pool[i // len(QUESTIONS)] for i in picks]
            questions = [QUESTIONS[i % len(QUESTIONS)] for i in picks]
            return vision_batch(scenes, questions, n_img)  # type: ignore[arg-type]

        t0 = time.process_time()
        figures = train_stage(model, st, batch, seed=seed)
        figures["cpu_s"] = time.process_time() - t0
        _SFT_CACHE.clear()  # one seed's model at a time
        _SFT_CACHE[key] = (model, figures)
    model, figures = _SFT_CACHE[key]
    return copy.deepcopy(model), figures


def grpo_train_config(config: VLMGRPOConfig) -> TrainConfig:
    """The Trainer's settings for GRPO: one optimizer update per rollout, AdamW on the LoRA
    weights at ``grpo_lr`` (no decay), gradients clipped at norm 1, float32, every step
    logged (the curves are read back from ``metrics.jsonl``)."""
    return TrainConfig(
        steps=config.grpo_steps,
        batch_size=config.prompts_per_step,  # unused by online runs: prompts_per_step rules
        max_grad_norm=1.0,
        precision="float32",
        optimizer=OptimizerConfig(lr=config.grpo_lr, weight_decay=0.0),
        log_every=1,
        plot_curves=False,
        keep_last=1,
        progress=False,
        num_threads=config.num_threads,
    )


def train_grpo(config: VLMGRPOConfig, model: LlavaVLM, seed: int, run_dir: Path) -> dict[str, Any]:
    """GRPO with LoRA on the LM (and connector), run by the core ``Trainer``'s online step:
    each step one rollout of ``P x G`` answers conditioned on the prompts' images, then one
    update. The run's ``metrics.jsonl``, ``report.md`` and final checkpoint (the LoRA weights
    and optimizer state) go to ``run_dir``. Returns per-step curves (reward, KL, length, read
    back from ``metrics.jsonl``), CPU seconds and parameter counts.
    """
    from splice_grpo.configs import GRPOConfig
    from splice_grpo.objective import build_grpo

    # LoRA's A starts random: seed it, so the start does not hang on what ran before in
    # this process (the sft arm, another seed in the same worker)
    torch.manual_seed(derive_seed(seed, "vlm-grpo-lora") % 2**63)
    add_lora(model, config.lora_rank, config.lora_on)
    grpo = GRPOConfig.model_validate(
        {
            "group_size": config.group_size,
            "rewards": [{"reward": {"type": "answer_match"}}],
            "beta": config.beta,
        }
    )
    # the image placeholder is never an answer token (the training forward would read it
    # as an image slot)
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens, temperature=1.0, suppress_token_ids=[IMAGE_ID]
    )
    rollouts = Rollouts(
        sampling,
        TOKENIZER,
        seed=derive_seed(seed, "vlm-grpo-rollouts"),
        prompts_per_step=config.prompts_per_step,
    )
    trainer = Trainer(
        model,
        build_grpo(grpo),
        grpo_prompts(config, seed, model.tokens_per_image),
        grpo_train_config(config),
        run_dir=run_dir,
        seed=seed,
        rollouts=rollouts,
        title=f"vlm-grpo seed {seed}",
    )
    t0 = time.process_time()
    trainer.fit(overwrite=True)  # a re-run study replaces the seed's earlier run
    cpu_s = time.process_time() - t0
    steps = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    curves = {k: [float(r[k]) for r in steps] for k in ("reward", "kl", "completion_length")}
    trainable, total = count_parameters(model)
    return {
        "curves": curves,
        "cpu_s": cpu_s,
        "trainable": trainable,
        "total": total,
    }


def run_one(config: VLMGRPOConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """Train arm ``arm`` (``sft``: the start; ``grpo``: the start after GRPO) and score it;
    the GRPO curves go to ``folder / "curves.json"``."""
    if config.precision != "float32":
        raise ValueError(f"vlm-grpo runs in float32 only, got precision={config.precision!r}")
    torch.set_num_threads(config.num_threads)
    task = ShapesTask()
    model, sft_figures = sft_start(config, seed)
    trained = [s.image for s in sft_pool(task, config, seed)]
    out: dict[str, float] = {
        "sft_cpu_s": sft_figures["cpu_s"],
        "sft_loss": sft_figures["final_loss"],
    }
    if arm == "grpo":
        grpo = train_grpo(config, model, seed, folder / "trainer")
        prompts = grpo_prompts(config, seed, model.tokens_per_image)
        trained += [img for k in range(config.grpo_steps) for img in prompts.batch(k)["images"]]
        out.update(
            grpo_cpu_s=grpo["cpu_s"],
            final_reward=sum(grpo["curves"]["reward"][-10:]) / len(grpo["curves"]["reward"][-10:]),
            trainable=float(grpo["trainable"]),
        )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "curves.json").write_text(json.dumps(grpo["curves"]) + "\n")
    elif arm != "sft":
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    scored = scored_scenes(task, config, seed)
    check_disjoint(scored, trained)
    scores = vqa_exact_match(model.eval(), scored)
    return {**out, **scores}


def study_arms(config: VLMGRPOConfig) -> list[str]:
    """The arms of one seed, in order: the SFT start before GRPO from it."""
    return list(ARMS)


#: every arm of one seed, in order: one worker's share
run_seed = functools.partial(every_arm, run_one, study_arms)


def claims() -> list[Claim]:
    per_question = [
        Claim(f"grpo-{q}", "grpo", "sft", f"em_{q}", "higher",
              text=f"GRPO answers more held-out {q} questions than its SFT start",
              scale=100, unit=" pt")
        for q in QUESTIONS
    ]  # fmt: skip
    return [
        Claim("grpo-beats-sft", "grpo", "sft", "vqa_em", "higher",
              text="GRPO raises held-out VQA exact match over its SFT start",
              scale=100, unit=" pt"),
        *per_question,
    ]  # fmt: skip


def plot(result: StudyResult, config: VLMGRPOConfig, path: Path) -> None:
    """Left: each seed's reward over GRPO steps (running mean); right: exact match per question,
    SFT start and after GRPO (means over seeds, 95% interval bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for seed in result.seeds:
        curves = json.loads((config.arm_dir("grpo", seed) / "curves.json").read_text())
        reward = torch.tensor(curves["reward"])
        window = max(1, min(20, len(reward) // 5))  # one step's 16 prompts are noisy
        smooth = reward.unfold(0, window, 1).mean(-1)
        left.plot(range(window - 1, len(reward)), smooth.tolist(), alpha=0.9, label=f"seed {seed}")
    left.set_xlabel("GRPO step")
    left.set_ylabel("mean reward (answer_match)")
    left.set_title("reward of the sampled answers (20-step mean)")
    left.legend(fontsize=8)
    metrics = ["vqa_em"] + [f"em_{q}" for q in QUESTIONS]
    x = torch.arange(len(metrics)).float()
    for offset, arm in ((-0.2, "sft"), (0.2, "grpo")):
        ivs = [result.interval(arm, m) for m in metrics]
        right.bar(
            (x + offset).tolist(),
            [100 * iv.mean for iv in ivs],
            width=0.4,
            yerr=[100 * (iv.high - iv.mean) for iv in ivs],
            label=arm,
        )
    right.set_xticks(x.tolist(), ["all", *QUESTIONS])
    right.set_ylabel("held-out exact match (%)")
    right.set_title("greedy answers, SFT start vs after GRPO")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def side_table(result: StudyResult) -> str:
    metrics = ["vqa_em"] + [f"em_{q}" for q in QUESTIONS]
    lines = [
        "| arm | exact match | " + " | ".join(QUESTIONS) + " | CPU s (SFT / GRPO) |",
        "|---|---:|" + "---:|" * len(QUESTIONS) + "---:|",
    ]
    for arm in ARMS:
        cells = [f"{100 * result.interval(arm, m).mean:.1f}%" for m in metrics]
        sft_s = result.interval(arm, "sft_cpu_s").mean
        grpo_s = result.interval(arm, "grpo_cpu_s").mean if arm == "grpo" else 0.0
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {sft_s:.0f} / {grpo_s:.0f} |")
    return "\n".join(lines)


def run(config: VLMGRPOConfig) -> dict[str, Any]:
    """SFT then GRPO for every seed; print the claims and the table, write the plot."""

    def extras(result: StudyResult) -> dict[str, Any]:
        path = Path(config.run_dir()) / "vlm-grpo.png"
        plot(result, config, path)
        return {"side_table": side_table(result), "plot": path.name}

    return run_and_report(
        config,
        arms=list(ARMS),
        run_one=seeds_in_workers(
            run_seed, config, lambda arm, seed, folder: run_one(config, arm, seed, folder)
        ),
        claims=claims(),
        extras=extras,
    )


def config() -> VLMGRPOConfig:
    return VLMGRPOConfig()


recipe = Recipe(
    name="vlm-grpo",
    description="GRPO on a LLaVA-style VLM (LoRA on the LM) rewarded by rule-verified answers "
    "about synthetic images, from an SFT start: held-out exact match before/after over seeds",
    config=config,
    run=run,
)

__all__ = [
    "ARMS",
    "SceneQuestions",
    "VLMGRPOConfig",
    "add_lora",
    "build_vlm",
    "check_disjoint",
    "claims",
    "grpo_prompts",
    "grpo_train_config",
    "recipe",
    "run",
    "run_one",
    "run_seed",
    "scored_scenes",
    "sft_pool",
    "sft_start",
    "study_arms",
    "train_grpo",
]
