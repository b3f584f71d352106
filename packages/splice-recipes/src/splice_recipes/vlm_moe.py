"""Recipe ``vlm-moe``: dense vs shared-routing MoE vs modality-isolated MoE (ERNIE 4.5) in
the native early-fusion VLM, at equal active parameters, over seeds.

Every arm is a ``native_vlm`` (a patch embedding writes one token per 8x8 patch into the
decoder's sequence) trained from scratch on the same stream, which alternates visual
question answering (image + question -> answer) and text-only batches (captions and
``question?answer`` strings, no image). The arms differ only in each block's FFN, all with
the same active FFN width per token:

* ``dense``: a SwiGLU of width ``2h``;
* ``moe-shared``: 4 routed experts of width ``h``, top-1, plus one shared expert of width
  ``h``; text and image tokens share one router pool (balancing loss 0.01);
* ``moe-isolated``: the same experts split by modality (2 text, 2 image): a text token is
  routed among the text experts only, an image-patch token among the image experts only,
  the shared expert serves both; the balancing loss is taken per modality, and the router
  orthogonal loss (0.01) pushes the experts' router directions apart.

Each arm's learning rate is chosen on a dev split (lowest dev VQA loss): the held-out
scenes of tuning seed 100, whose runs are never reported; every reported seed is scored on
its own held-out scenes, checked distinct and disjoint from its training scenes and from
the dev scenes (by image). Training decays the learning rate to zero along a cosine, so a
run is read once, at the end, where its weights have settled.

Each run reports held-out VQA loss and greedy exact match, held-out text-only loss (does
the language side keep its ability?), and, for the MoE arms, each expert's share of the
text and the image tokens of a held-out batch (``expert-load.png``). Seeds run in worker
processes (``workers``), the dev-split runs too.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from splice.nn.modality import current_token_modality
from splice.objectives.sft import SFTObjective
from splice.recipe import Recipe
from splice.training.trainer import seed_everything
from splice_moe.layer import MoELayer
from splice_moe.modality import allowed_experts
from splice_vision.configs import NativeVLMConfig
from splice_vision.data import QUESTIONS, Scene, ShapesTask
from splice_vision.vlm import NativeVLM
from torch import nn

from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    every_arm,
    run_and_report,
    seeds_in_workers,
    tune_in_workers,
)
from splice_recipes.study.tuning import tuning_extras, with_chosen
from splice_recipes.vlm_compare import (
    IMAGE_ID,
    VOCAB,
    StageConfig,
    text_batch,
    train_scenes,
    train_stage,
    vision_batch,
    vqa_exact_match,
)

ARMS = ("dense", "moe-shared", "moe-isolated")
N_EXPERTS = 4


class VLMMoEConfig(TunedStudyConfig):
    """Settings of ``vlm-moe``.

    Attributes:
        d_model / n_layers / n_heads: the decoder.
        hidden: ``h``, the width of one expert; dense gets ``2h`` (equal active width).
        train: steps (alternating VQA and text batches), batch size; its learning rate is
            replaced by the arm's (``arm_lrs``), decayed to zero along a cosine.
        lrs: the learning rates tried on the dev split, per arm (ties: the first listed).
        arm_lrs: an arm's learning rate; an arm not listed has its own chosen on the dev split.
        tuning_seeds: seeds of the dev-split runs; their held-out scenes are the dev split
            (never reported).
        eval_scenes: held-out (and dev) scenes, each asked every question.
        workers: seeds (and dev runs) run at once, one process each; figures do not depend on it.
    """

    name: str = "vlm-moe"
    seeds: PositiveInt = 5
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    hidden: PositiveInt = 64
    train: StageConfig = Field(default_factory=lambda: StageConfig(steps=600, lr=2e-3, decay=True))
    lrs: list[PositiveFloat] = Field(default_factory=lambda: [1e-3, 2e-3, 4e-3], min_length=1)
    arm_lrs: dict[str, PositiveFloat] = Field(default_factory=dict)
    eval_scenes: PositiveInt = 100
    num_threads: PositiveInt = 1
    workers: PositiveInt = 2

    @model_validator(mode="after")
    def _checks(self) -> VLMMoEConfig:
        unknown = sorted(set(self.arm_lrs) - set(ARMS))
        if unknown:
            raise ValueError(f"arm_lrs: unknown arms {unknown}; arms are {list(ARMS)}")
        return self

    def lr_of(self, arm: str) -> float:
        if arm not in self.arm_lrs:
            raise ValueError(f"no learning rate for {arm!r} yet: run() chooses it on the dev split")
        return self.arm_lrs[arm]


def channel_mixer(config: VLMMoEConfig, arm: str) -> dict[str, Any]:
    h = config.hidden
    if arm == "dense":
        return {"type": "swiglu", "hidden_dim": 2 * h}
    moe: dict[str, Any] = {
        "type": "moe", "n_experts": N_EXPERTS, "top_k": 1, "expert_hidden": h,
        "n_shared": 1, "shared_hidden": h, "aux_loss_weight": 0.01,
    }  # fmt: skip
    if arm == "moe-isolated":
        moe.update(modality_experts=[2, 2], orthogonal_loss_weight=0.01)
    elif arm != "moe-shared":
        raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
    return moe


def build_vlm(config: VLMMoEConfig, arm: str) -> NativeVLM:
    lm = {
        "type": "decoder", "vocab_size": VOCAB, "d_model": config.d_model,
        "n_layers": config.n_layers, "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": config.n_heads},
                  "channel_mixer": channel_mixer(config, arm)},
    }  # fmt: skip
    cfg = NativeVLMConfig.model_validate({"lm": lm, "image_token_id": IMAGE_ID, "patch_size": 8})
    return NativeVLM(cfg)


def active_params(model: nn.Module) -> int:
    """Parameters a token uses: everything but the routed experts it skips."""
    total = sum(p.numel() for p in model.parameters())
    for layer in model.modules():
        if isinstance(layer, MoELayer):
            per_expert = sum(p.numel() for p in layer.experts.parameters()) // N_EXPERTS
            total -= (N_EXPERTS - layer.config.top_k) * per_expert
    return total


@torch.no_grad()
def held_out_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    model.eval()
    return float(SFTObjective().loss(model, batch).metrics["ce_loss"])


@torch.no_grad()
def expert_load(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each routed expert's share of the text tokens and of the image tokens of ``batch``
    (over all MoE layers): ``load_text_e<i>``, ``load_image_e<i>``."""
    counts = torch.zeros(2, N_EXPERTS)

    def hook(layer: nn.Module, args: tuple[torch.Tensor], _out: object) -> None:
        h = args[0].reshape(-1, args[0].shape[-1])
        ids = current_token_modality()
        mod = torch.zeros(h.shape[0], dtype=torch.long) if ids is None else ids.reshape(-1)
        split = layer.config.modality_experts  # type: ignore[union-attr]
        allowed = allowed_experts(mod, split) if split else None
        top = layer.router(h, allowed).top_idx  # type: ignore[operator]
        for m in (0, 1):
            counts[m] += torch.bincount(top[mod == m].flatten(), minlength=N_EXPERTS).float()

    layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()(batch["input_ids"], images=batch["images"])
    finally:
        for handle in handles:
            handle.remove()
    share = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    return {
        f"load_{kind}_e{e}": float(share[m, e])
        for m, kind in enumerate(("text", "image"))
        for e in range(N_EXPERTS)
    }


def image_key(scene: Scene) -> str:
    """A scene's identity: the hash of its image's bytes."""
    return hashlib.sha256(scene.image.numpy().tobytes()).hexdigest()


def check_disjoint(scored: list[Scene], others: set[str], *, where: str) -> None:
    """Raise unless the ``scored`` scenes are distinct and none is in ``others`` (by image).

    Raises:
        RuntimeError: naming ``where`` and how many repeat (a split bug, never bad input).
    """
    keys = [image_key(s) for s in scored]
    repeats = len(keys) - len(set(keys))
    shared = len(set(keys) & others)
    if repeats or shared:
        raise RuntimeError(
            f"{where}: {repeats} scenes repeat and {shared} are also in the other set"
        )


def dev_scenes(config: VLMMoEConfig, task: ShapesTask) -> list[Scene]:
    """The dev split: the held-out scenes of the tuning seeds."""
    return [
        s for t in config.tuning_seeds for s in task.sample("held_out", config.eval_scenes, seed=t)
    ]


def train_and_score(
    config: VLMMoEConfig, arm: str, seed: int, lr: float, *, dev: bool = False
) -> dict[str, float]:
    """Train arm ``arm`` from seed ``seed`` at ``lr``; score it on that seed's held-out
    scenes (the dev split when ``seed`` is a tuning seed, ``dev=True``), checked distinct
    and disjoint from the scenes it trained on (and, when reported, from the dev split)."""
    torch.set_num_threads(config.num_threads)
    seed_everything(seed)
    task = ShapesTask()
    model = build_vlm(config, arm)
    n_img = int(model.tokens_per_image)
    st = config.train.model_copy(update={"lr": lr})
    trained: set[str] = set()

    def batch(step: int) -> dict[str, torch.Tensor]:
        scenes = train_scenes(task, step, st.batch_size, seed, 0)
        if step % 2:
            return text_batch(scenes, step)
        trained.update(image_key(s) for s in scenes)
        qs = [QUESTIONS[(step // 2 + i) % len(QUESTIONS)] for i in range(len(scenes))]
        return vision_batch(scenes, qs, n_img)  # type: ignore[arg-type]

    times = train_stage(model, st, batch, seed=seed)
    held = task.sample("held_out", config.eval_scenes, seed=seed)
    split = "dev" if dev else "held-out"
    check_disjoint(held, trained, where=f"{arm} seed {seed}: {split} scenes vs training")
    if not dev:
        dev_keys = {image_key(s) for s in dev_scenes(config, task)}
        check_disjoint(held, dev_keys, where=f"{arm} seed {seed}: held-out scenes vs dev")
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(len(held))]
    vqa = vision_batch(held, qs, n_img)  # type: ignore[arg-type]
    out = {
        "vqa_loss": held_out_loss(model, vqa),
        "text_loss": held_out_loss(model, text_batch(held, 0)),
        "vqa_em": vqa_exact_match(model, held)["vqa_em"],
        "total_params": float(sum(p.numel() for p in model.parameters())),
        "active_params": float(active_params(model)),
        "ms_per_step": times["step_ms"],
    }
    if arm != "dense":
        out.update(expert_load(model, vqa))
    return out


def run_one(
    config: VLMMoEConfig, arm: str, seed: int, folder: Path | None = None
) -> dict[str, float]:
    """One reported run: arm ``arm`` at its chosen learning rate, seed ``seed``."""
    return train_and_score(config, arm, seed, config.lr_of(arm))


def study_arms(config: VLMMoEConfig) -> list[str]:
    return list(ARMS)


#: every arm of one seed: one worker's share
run_seed = functools.partial(every_arm, run_one, study_arms)


def dev_run(config: VLMMoEConfig, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One tuning run: ``arm`` at ``lr`` on tuning seed ``seed``, scored on the dev split."""
    return train_and_score(config, arm, seed, lr, dev=True)


def choose_lrs(config: VLMMoEConfig) -> tuple[VLMMoEConfig, list[Tuning]]:
    """Each arm's learning rate not set in ``arm_lrs``, chosen on the dev split (lowest mean
    dev VQA loss over the tuning seeds); the config with every arm's set, and the records."""
    todo = [arm for arm in ARMS if arm not in config.arm_lrs]
    tunings = tune_in_workers(
        functools.partial(dev_run, config),
        {arm: config.lrs for arm in todo},
        metric="vqa_loss",
        seeds=config.tuning_seeds,
        workers=config.workers,
        direction="lower",
    )
    for t in tunings:
        print(
            f"{t.name}: chose lr {t.value:g} on the dev split (dev VQA loss {t.scores[t.chosen]:.4f})"
        )
    return with_chosen(config, "arm_lrs", tunings), tunings


def claims() -> list[Claim]:
    return [
        Claim("isolated-vqa-loss-vs-dense", "moe-isolated", "dense", "vqa_loss", "lower",
              text="modality-isolated MoE has lower held-out VQA loss than dense"),
        Claim("isolated-vqa-loss-vs-shared", "moe-isolated", "moe-shared", "vqa_loss", "lower",
              text="modality-isolated MoE has lower held-out VQA loss than shared-routing MoE"),
        Claim("isolated-vqa-em-vs-shared", "moe-isolated", "moe-shared", "vqa_em", "higher",
              text="modality-isolated MoE answers more held-out questions than shared-routing MoE",
              scale=100, unit=" pt"),
        Claim("isolated-text-vs-dense", "moe-isolated", "dense", "text_loss", "lower",
              text="modality-isolated MoE keeps a lower text-only held-out loss than dense"),
    ]  # fmt: skip


def plot_expert_load(result: StudyResult, path: Path) -> None:
    """Bars: each expert's share of the text and of the image tokens, per MoE arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, arm in zip(axes, ("moe-shared", "moe-isolated")):
        x = torch.arange(N_EXPERTS).float()
        for offset, kind in ((-0.2, "text"), (0.2, "image")):
            share = [result.interval(arm, f"load_{kind}_e{e}").mean for e in range(N_EXPERTS)]
            ax.bar((x + offset).tolist(), share, width=0.4, label=f"{kind} tokens")
        ax.set_title(arm)
        ax.set_xlabel("routed expert")
        ax.set_xticks(range(N_EXPERTS))
    axes[0].set_ylabel("share of the modality's tokens")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def side_table(result: StudyResult, config: VLMMoEConfig) -> str:
    lines = [
        "| arm | total params | active params | lr (dev) | VQA loss | VQA exact match "
        "| text loss | ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        f = result.figures[arm][result.seeds[0]]
        mean = {
            m: result.interval(arm, m).mean
            for m in ("vqa_loss", "vqa_em", "text_loss", "ms_per_step")
        }
        lines.append(
            f"| {arm} | {int(f['total_params']):,} | {int(f['active_params']):,} "
            f"| {config.lr_of(arm):g} | {mean['vqa_loss']:.4f} | {mean['vqa_em']:.1%} | {mean['text_loss']:.4f} "
            f"| {mean['ms_per_step']:.1f} |"
        )
    return "\n".join(lines)


def run(config: VLMMoEConfig) -> dict[str, Any]:
    """Choose each arm's learning rate on the dev split, train every arm for every seed
    (seeds in worker processes); print the claims, the table and the load plot's path."""
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    config, tunings = choose_lrs(config)

    def extras(result: StudyResult) -> dict[str, Any]:
        plot = Path(config.run_dir()) / "expert-load.png"
        plot_expert_load(result, plot)
        # a file name, not a path: the study folder holds the plot wherever it is published
        return {
            "lr": dict(config.arm_lrs),
            "side_table": side_table(result, config),
            "expert_load_plot": plot.name,
            **tuning_extras(tunings),
        }

    return run_and_report(
        config,
        arms=list(ARMS),
        run_one=seeds_in_workers(
            run_seed, config, lambda arm, seed, _folder: run_one(config, arm, seed)
        ),
        claims=claims(),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
    )


def config() -> VLMMoEConfig:
    return VLMMoEConfig()


recipe = Recipe(
    name="vlm-moe",
    description="native VLM with a dense FFN, shared-routing MoE or modality-isolated MoE "
    "(ERNIE 4.5) at equal active parameters, over seeds: VQA loss / exact match and text "
    "loss claims with intervals, expert load by modality plotted",
    config=config,
    run=run,
)
