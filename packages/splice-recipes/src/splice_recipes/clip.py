"""Recipe ``clip``: a tiny CLIP on synthetic shapes, as a study (arms x seeds, paired
intervals, a shown / not-shown verdict per claim).

Images are splice-vision's generated scenes (``"2 red circles on the left"``), texts their
captions, character-tokenized. Each batch holds scenes with pairwise different captions,
so no positive pair is also a negative. Arms: the CLIP InfoNCE loss and the SigLIP sigmoid
loss, each at every batch size of ``batch_sizes``, for the same steps (SigLIP's logit bias
starts at ``-log B``, its paper's prior that a pair is positive with probability ~1/B).

Each arm's learning rate is chosen on a **dev split** first: every candidate of ``lrs``
trains on the tuning seeds (100, never reported) and is scored on ``dev_images`` dev scenes
(the held-out stream of another seed: images never trained on and disjoint from the
reported ones, asserted); the best mean zero-shot accuracy wins, so InfoNCE and SigLIP each
get their best at each batch size. The candidates and the reported seeds run in
``workers`` processes.

Every run is scored once, after training (the one-cycle schedule ends at ~zero learning
rate, so the final weights are where the run settled), on ``eval_images`` held-out scenes,
each a distinct image never trained on (asserted by hashing every image seen):

* **zero-shot accuracy per attribute**: shape (3-way), colour (4-way), count (1-3) and side
  (left / right, a relational attribute). An attribute value's class embedding is the mean
  text embedding of every caption holding that value (prompt ensembling over the other
  attributes), so no class text names only the value;
* **recall@1** image->text among ``retrieval_pairs`` held-out pairs (a retrieved caption
  counts when it is the query's caption).

Claims: each attribute's accuracy above chance for each loss at the largest batch, and
SigLIP above InfoNCE on the mean attribute accuracy at each batch size (SigLIP's claim is
that the sigmoid loss does better at small batches).
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator
from splice.data.tokenizer import CharTokenizer
from splice.recipe import Recipe
from splice.training.trainer import seed_everything
from splice_vision.clip import CLIP, recall_at_k
from splice_vision.configs import CLIPConfig, ShapesTaskConfig, TextEncoderConfig, ViTConfig
from splice_vision.data import COLOURS, SHAPES, SIDES, Scene, ShapesTask
from torch import Tensor

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

TOKENIZER = CharTokenizer()
LOSSES = ("infonce", "siglip")
#: the seed of the held-out stream that the dev scenes come from (the reported ones: seed 0)
DEV_STREAM_SEED = 1


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
    )  # fmt: skip


class ClipStudy(TunedStudyConfig):
    """The study: one CLIP per loss x batch size x seed, each arm at its dev-chosen lr.

    Attributes:
        model: the dual encoder (its ``loss`` and ``init_logit_bias`` are set per arm).
        batch_sizes: the batch sizes compared (72 distinct captions exist).
        steps: AdamW steps of every arm (one-cycle schedule).
        lr: the learning rate of an arm that ``arm_lrs`` does not name (a CLIP trained
            outside the study, as ``vlm-compare``'s vision tower).
        lrs: the candidates tried per arm on the dev split (ties: the first listed).
        arm_lrs: each arm's learning rate; the study fills it with the dev choice (an arm
            given here is not tuned).
        tuning_seeds: seeds of the dev-split runs (never among the reported seeds).
        eval_images: held-out scenes scored (each a distinct image).
        dev_images: dev scenes that score the candidates (distinct, disjoint from held-out).
        retrieval_pairs: held-out image-caption pairs for recall@1.
        workers: processes that run the candidates, then the seeds (one thread each; the
            figures do not depend on it).
    """

    name: str = "clip"
    seeds: int = 5
    model: CLIPConfig = Field(default_factory=_default_model)
    task: ShapesTaskConfig = Field(default_factory=ShapesTaskConfig)
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [8, 32])
    steps: PositiveInt = 600
    lr: PositiveFloat = 5e-4
    lrs: list[PositiveFloat] = Field(default_factory=lambda: [2.5e-4, 5e-4, 1e-3])
    arm_lrs: dict[str, PositiveFloat] = Field(default_factory=dict)
    eval_images: PositiveInt = 600
    dev_images: PositiveInt = 300
    retrieval_pairs: PositiveInt = 64
    workers: PositiveInt = 2
    num_threads: PositiveInt = 1  # tiny matmuls: more threads cost more than they gain

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or max(v) > 72:
            raise ValueError(f"batch_sizes: need distinct sizes of at most 72, got {v}")
        return v

    def arms(self) -> list[str]:
        return [f"{loss}-b{b}" for b in self.batch_sizes for loss in LOSSES]


def parse_arm(arm: str) -> tuple[str, int]:
    """``"siglip-b8"`` -> ``("siglip", 8)``."""
    loss, b = arm.rsplit("-b", 1)
    return loss, int(b)


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


def image_hash(image: Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


def train_clip(config: ClipStudy, arm: str, seed: int) -> tuple[CLIP, set[str], float]:
    """Train one arm's CLIP; returns it, the hashes of every image it saw, and the mean
    loss of its last 20 steps."""
    loss, batch = parse_arm(arm)
    seed_everything(seed)
    model_cfg = config.model.model_copy(update={"loss": loss, "init_logit_bias": -math.log(batch)})
    model = CLIP(model_cfg)
    task = ShapesTask(config.task)
    lr = config.arm_lrs.get(arm, config.lr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=config.steps, pct_start=0.1
    )
    seen: set[str] = set()
    losses: list[float] = []
    start = 0
    model.train()
    for _ in range(config.steps):
        scenes = task.distinct_captions("train", batch, seed=seed, start=start)
        start += batch
        seen.update(image_hash(s.image) for s in scenes)
        ids, mask = tokenize([s.caption for s in scenes], config.model.text.max_len)
        out = model(images_of(scenes), ids, mask)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
    return model, seen, sum(losses[-20:]) / len(losses[-20:])


def attribute_values(config: ClipStudy) -> dict[str, list[str]]:
    """Every value of each scored attribute (as ``Scene.answer`` writes it)."""
    counts = [str(c) for c in range(1, config.task.max_count + 1)]
    return {"shape": list(SHAPES), "color": list(COLOURS), "count": counts, "side": list(SIDES)}


def all_captions(config: ClipStudy) -> list[Scene]:
    """One (imageless) scene per caption: every combination of the attributes."""
    blank = torch.zeros(0)
    return [
        Scene(blank, s, c, n, side)
        for s in SHAPES
        for c in COLOURS
        for n in range(1, config.task.max_count + 1)
        for side in SIDES
    ]


@torch.no_grad()
def evaluate_clip(model: CLIP, config: ClipStudy, held_out: list[Scene]) -> dict[str, float]:
    """Zero-shot accuracy per attribute (``zs_<attr>``), their mean (``zs_mean``) and
    image->text recall@1 (``i2t_r1``) on ``held_out``."""
    model.eval()
    img = model.encode_image(images_of(held_out))  # (N, E)
    combos = all_captions(config)
    ids, mask = tokenize([s.caption for s in combos], config.model.text.max_len)
    txt = model.encode_text(ids, mask)  # (C, E)
    out: dict[str, float] = {}
    for attr, values in attribute_values(config).items():
        # Class embedding: the mean of every caption holding the value, renormalised.
        cls = torch.stack(
            [txt[[i for i, s in enumerate(combos) if s.answer(attr) == v]].mean(0) for v in values]
        )
        pred = (img @ torch.nn.functional.normalize(cls, dim=-1).t()).argmax(-1)
        truth = torch.tensor([values.index(s.answer(attr)) for s in held_out])
        out[f"zs_{attr}"] = float((pred == truth).float().mean())
    out["zs_mean"] = sum(out.values()) / len(out)
    pairs = held_out[: config.retrieval_pairs]
    ids, mask = tokenize([s.caption for s in pairs], config.model.text.max_len)
    captions = [s.caption for s in pairs]
    match = torch.tensor([[a == b for b in captions] for a in captions])
    r = recall_at_k(img[: len(pairs)], model.encode_text(ids, mask), ks=(1,), match=match)
    out["i2t_r1"] = r["i2t_r1"]
    return out


def claims(config: ClipStudy) -> list[Claim]:
    chance = {a: 1.0 / len(v) for a, v in attribute_values(config).items()}
    top = max(config.batch_sizes)
    out = [
        Claim(f"{loss}-{attr}-above-chance", f"{loss}-b{top}", p, f"zs_{attr}", "higher",
              scale=100, unit=" pt",
              text=f"{loss} (batch {top}) zero-shot {attr} accuracy above chance {p:.0%}")
        for loss in LOSSES
        for attr, p in chance.items()
    ]  # fmt: skip
    out += [
        Claim(f"siglip-beats-infonce-b{b}", f"siglip-b{b}", f"infonce-b{b}", "zs_mean",
              "higher", scale=100, unit=" pt",
              text=f"SigLIP beats InfoNCE at batch {b} (mean zero-shot attribute accuracy)")
        for b in config.batch_sizes
    ]  # fmt: skip
    return out


def side_table(result: StudyResult, config: ClipStudy) -> str:
    """Per arm: its learning rate, each attribute's zero-shot accuracy and recall@1, means ±
    half-widths."""
    metrics = [f"zs_{a}" for a in attribute_values(config)] + ["zs_mean", "i2t_r1"]
    lines = [
        "| arm | lr (dev) | " + " | ".join(metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for arm in config.arms():
        cells = [f"{config.arm_lrs.get(arm, config.lr):g}"]
        for m in metrics:
            iv = result.interval(arm, m)
            cells.append(f"{iv.mean:.1%} ± {iv.half_width:.1%}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scored_scenes(config: ClipStudy) -> tuple[list[Scene], list[Scene]]:
    """The held-out scenes (reported) and the dev scenes (choosing the lr): every image
    distinct, the two sets disjoint (asserted; both are also never trained on, checked per
    run)."""
    task = ShapesTask(config.task)
    held_out = task.sample("held_out", config.eval_images, seed=0)
    dev = task.sample("held_out", config.dev_images, seed=DEV_STREAM_SEED)
    held, dev_h = [image_hash(s.image) for s in held_out], [image_hash(s.image) for s in dev]
    if len(set(held)) != len(held) or len(set(dev_h)) != len(dev_h):
        raise ValueError("held-out or dev images repeat: each must be scored once")
    if set(held) & set(dev_h):
        raise ValueError("a dev image is also a held-out image: the splits must be disjoint")
    return held_out, dev


def train_and_score(
    config: ClipStudy, arm: str, seed: int, scenes: list[Scene]
) -> dict[str, float]:
    """Train one arm for one seed and score it on ``scenes`` (none of them trained on)."""
    model, seen, final_loss = train_clip(config, arm, seed)
    leaked = seen.intersection(image_hash(s.image) for s in scenes)
    if leaked:
        raise ValueError(f"{arm} seed {seed}: {len(leaked)} scored images were trained on")
    return {**evaluate_clip(model, config, scenes), "final_loss": final_loss}


def run_one(config: ClipStudy, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One reported run: the arm at its chosen lr, scored on the held-out scenes."""
    torch.set_num_threads(config.num_threads)
    return {**train_and_score(config, arm, seed, scored_scenes(config)[0]),
            "lr": config.arm_lrs.get(arm, config.lr)}  # fmt: skip


def dev_run(config: ClipStudy, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One tuning run: ``arm`` at ``lr`` on tuning seed ``seed``, scored on the dev scenes."""
    torch.set_num_threads(config.num_threads)
    trial = config.model_copy(update={"arm_lrs": {**config.arm_lrs, arm: lr}})
    return train_and_score(trial, arm, seed, scored_scenes(config)[1])


def choose_lrs(config: ClipStudy) -> list[Tuning]:
    """The learning rate of each arm not in ``arm_lrs``, chosen among ``lrs`` on the dev
    split (the runs in ``config.workers`` processes): the best mean dev zero-shot accuracy
    over the tuning seeds."""
    return tune_in_workers(
        functools.partial(dev_run, config),
        {arm: config.lrs for arm in config.arms() if arm not in config.arm_lrs},
        metric="zs_mean",
        seeds=config.tuning_seeds,
        workers=config.workers,
    )


def tune_arm(config: ClipStudy, arm: str) -> Tuning:
    """Choose ``arm``'s learning rate among ``lrs`` in this process (``choose_lrs`` for one
    arm)."""
    cands = {arm: config.lrs}
    return tune_in_workers(
        functools.partial(dev_run, config), cands, metric="zs_mean", seeds=config.tuning_seeds,
        workers=1,
    )[0]  # fmt: skip


def study_arms(config: ClipStudy) -> list[str]:
    return config.arms()


#: every arm of one seed: one worker's share of the reported runs
run_seed = functools.partial(every_arm, run_one, study_arms)


def run(config: ClipStudy) -> dict[str, Any]:
    """Choose each arm's lr on the dev split, train every arm over the seeds, and print the
    dev choice, the side table and each claim's verdict."""
    torch.set_num_threads(config.num_threads)
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    scored_scenes(config)  # fail before any training when the scored sets overlap
    tunings = choose_lrs(config)
    for t in tunings:
        print(f"{t.name}: lr {t.value:g} chosen on the dev split (dev mean zero-shot "
              f"accuracy {t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip
    chosen = with_chosen(config, "arm_lrs", tunings)

    def extras(result: StudyResult) -> dict[str, Any]:
        return {
            **tuning_extras(tunings, scale=100, unit="%"),
            "side_table": side_table(result, chosen),
        }

    return run_and_report(
        chosen,
        arms=chosen.arms(),
        run_one=seeds_in_workers(
            run_seed, chosen, lambda arm, seed, folder: run_one(chosen, arm, seed, folder)
        ),
        claims=claims(chosen),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
    )


def config() -> ClipStudy:
    return ClipStudy()


recipe = Recipe(
    name="clip",
    description="Tiny CLIP on synthetic shapes over seeds: zero-shot shape, colour, count and "
    "side accuracy against chance, InfoNCE vs SigLIP at two batch sizes (each lr chosen on a "
    "dev split), with intervals",
    config=config,
    run=run,
)

__all__ = [
    "ClipStudy",
    "claims",
    "evaluate_clip",
    "recipe",
    "run",
    "scored_scenes",
    "tokenize",
    "train_clip",
]
