"""Recipe ``lora-rank``: is fine-tuning's weight change low rank, and how small a LoRA rank
recovers it?

The seed's claims, tested over seeds: a small decoder (d=64) is pre-trained on task A
(addition), then fine-tuned on the related task B (subtraction, same digits and answer
format) by full fine-tuning and by LoRA on every linear layer (base frozen):

* the full fine-tuning delta ``W_ft - W_pre`` of each block matrix is low rank: the share of
  its singular-value energy in the top ``r`` directions, against Gaussian matrices of the
  same shapes (``delta_spectrum.png``);
* a small rank (r <= d/8) recovers most of full fine-tuning's gain on B
  (``recovered = gain_r / gain_full``, gain = accuracy on B minus the pre-trained model's);
* the scaling factor ``alpha / r`` controls how far the model moves (``||dW|| / ||W||`` at
  ``alpha/r`` = 0.5, 2, 8 for the main rank);
* step time and trainable parameters grow with r;
* a QLoRA arm (NF4 base) at the main rank: bytes per weight and training-state memory
  next to LoRA's.

Every arm of a seed starts from that seed's pre-trained model. Learning rates are the
recipe's defaults (LoRA's higher: B starts at zero), not tuned on the reported split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from splice.config import ModelField, TaskField
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ScheduleConfig,
    TrainConfig,
)

from splice_recipes.common import addition_task, short_run, tiny_decoder
from splice_recipes.study import Claim, StudyConfig, StudyResult, pinned, run_and_report, run_arm
from splice_recipes.study.report import write_json

VOCAB = 52  # pad/bos/eos + the default character alphabet


def _default_pretrain() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05)
    return short_run(
        steps=1000, batch_size=64, lr=3e-3, log_every=50, schedule=schedule, checkpoint_every=1000
    )


def _default_finetune() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=20, min_lr_ratio=0.1)
    return short_run(
        steps=300, batch_size=64, lr=1e-3, log_every=50, schedule=schedule, checkpoint_every=300
    )


class LoRARankConfig(StudyConfig):
    """Pre-train on ``old_task`` per seed; fine-tune on ``new_task`` fully and with LoRA.

    Attributes:
        ranks: LoRA ranks swept at ``alpha = 2r``; must include ``main_rank``.
        main_rank: the small rank the claims are about (<= d/8).
        alphas_over_r: extra ``alpha / r`` values tried at ``main_rank`` (the alpha sweep).
        qlora: add a QLoRA arm (NF4 base) at ``main_rank``.
        targets: LoRA targets (``splice-lora``'s syntax), the same for every arm.
        lora_lr / full_lr: peak learning rates of LoRA/QLoRA and of full fine-tuning.
        eval_every: steps between the fine-tunes' evaluations (the result averages the last).
        eval_examples: exact-match problems per task (more than the split: each once).
    """

    name: str = "lora-rank"
    seeds: PositiveInt = 3
    model: ModelField = Field(default_factory=lambda: tiny_decoder(VOCAB), validate_default=True)  # type: ignore[valid-type]
    old_task: TaskField = Field(default_factory=lambda: addition_task("+"), validate_default=True)  # type: ignore[valid-type]
    new_task: TaskField = Field(default_factory=lambda: addition_task("-"), validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=_default_finetune)
    ranks: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 8, 32])
    main_rank: PositiveInt = 8
    alphas_over_r: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 8.0])
    qlora: bool = True
    targets: str = "all-linear"
    lora_lr: PositiveFloat = 3e-3
    full_lr: PositiveFloat = 1e-3
    eval_every: PositiveInt = 60
    eval_examples: NonNegativeInt = 2000
    max_new_tokens: PositiveInt = 5

    @field_validator("ranks")
    @classmethod
    def _distinct(cls, ranks: list[int]) -> list[int]:
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"ranks: each rank once, got {ranks}")
        return ranks

    @model_validator(mode="after")
    def _main_rank_is_swept(self) -> LoRARankConfig:
        if self.main_rank not in self.ranks:
            raise ValueError(f"main_rank {self.main_rank} must be one of ranks {self.ranks}")
        return self

    def arms(self) -> list[str]:
        """``full`` first (the others' gain is read against it), then ranks, alphas, QLoRA."""
        r = self.main_rank
        return [
            "full",
            *[f"r{k}" for k in self.ranks],
            *[f"r{r}-a{a:g}" for a in self.alphas_over_r],
            *([f"qlora-r{r}"] if self.qlora else []),
        ]


def adapter_of(config: LoRARankConfig, arm: str) -> dict[str, Any] | None:
    """The arm's adapter config (None for full fine-tuning)."""
    if arm == "full":
        return None
    kind = "qlora" if arm.startswith("qlora-") else "lora"
    spec = arm.removeprefix("qlora-").removeprefix("r")
    rank_s, _, alpha_s = spec.partition("-a")
    rank, over_r = int(rank_s), float(alpha_s) if alpha_s else 2.0
    extra = {"dropout": 0.0} if kind == "qlora" else {}  # QLoRA's default is 0.05; match LoRA
    return {"type": kind, "r": rank, "alpha": over_r * rank, "targets": config.targets, **extra}


def _experiment(
    config: LoRARankConfig, name: str, *, task: Any, other: Any, train: TrainConfig, **extra: Any
) -> ExperimentConfig:
    return ExperimentConfig(
        name=f"{config.name}-{name}",
        model=config.model,
        data=DataConfig(task=task, max_len=config.max_len),
        train=train,
        eval=EvalConfig(
            every=config.eval_every,
            loss_batches=0,
            exact_match_examples=config.eval_examples,
            max_new_tokens=config.max_new_tokens,
            tasks={"other": other},
        ),
        **extra,
    )


def pretrain_config(config: LoRARankConfig) -> ExperimentConfig:
    """Task A from scratch (task B scored too: every arm's starting point)."""
    return _experiment(
        config, "pretrain", task=config.old_task, other=config.new_task, train=config.pretrain
    )


def finetune_config(config: LoRARankConfig, arm: str, init_from: str) -> ExperimentConfig:
    """Task B from the pre-trained weights, as ``arm`` says (task A scored as ``other``)."""
    adapter = adapter_of(config, arm)
    lr = config.full_lr if adapter is None else config.lora_lr
    train = config.finetune.model_copy(
        update={"optimizer": config.finetune.optimizer.model_copy(update={"lr": lr})}
    )
    return _experiment(
        config,
        arm,
        task=config.new_task,
        other=config.old_task,
        train=train,
        init_from=init_from,
        adapter=adapter,
    )


CLAIMS_TEXT = {
    "delta-low-rank": "over half of full fine-tuning's weight change lies in its top {r} "
    "of {d} singular directions",
    "small-rank-recovers": "LoRA r={r} (<= d/8) recovers at least 80% of full fine-tuning's "
    "gain on the new task",
    "rank-helps": "LoRA r={r} beats r=1 on the new task",
    "alpha-moves": "a larger alpha/r moves the weights further (alpha/r {hi:g} vs {lo:g})",
    "rank-costs-time": "a LoRA step at r={top} is slower than at r=1",
    "qlora-smaller": "QLoRA r={r} holds the model in fewer bytes than LoRA r={r}",
}


def claims(config: LoRARankConfig) -> list[Claim]:
    r, d = config.main_rank, int(config.model.d_model)
    lo, hi = min(config.alphas_over_r), max(config.alphas_over_r)
    t = {k: v.format(r=r, d=d, lo=lo, hi=hi, top=max(config.ranks)) for k, v in CLAIMS_TEXT.items()}
    out = [
        Claim(
            "delta-low-rank",
            "full",
            0.5,
            f"energy_top{r}",
            "higher",
            t["delta-low-rank"],
            scale=100,
            unit=" pt",
        ),
        Claim(
            "small-rank-recovers",
            f"r{r}",
            0.8,
            "recovered",
            "higher",
            t["small-rank-recovers"],
            scale=100,
            unit=" pt",
        ),
    ]
    if 1 in config.ranks and r != 1:
        out.append(
            Claim(
                "rank-helps",
                f"r{r}",
                "r1",
                "exact_match",
                "higher",
                t["rank-helps"],
                scale=100,
                unit=" pt",
            )
        )
    if len(config.alphas_over_r) >= 2:
        out.append(
            Claim(
                "alpha-moves",
                f"r{r}-a{hi:g}",
                f"r{r}-a{lo:g}",
                "relative_change",
                "higher",
                t["alpha-moves"],
            )
        )
    if 1 in config.ranks and max(config.ranks) > 1:
        out.append(
            Claim(
                "rank-costs-time",
                f"r{max(config.ranks)}",
                "r1",
                "ms_per_step",
                "higher",
                t["rank-costs-time"],
                unit=" ms",
            )
        )
    if config.qlora:
        out.append(
            Claim(
                "qlora-smaller",
                f"qlora-r{r}",
                f"r{r}",
                "weight_bytes",
                "lower",
                t["qlora-smaller"],
                scale=1 / 1024,
                unit=" KiB",
            )
        )
    return out


def run(config: LoRARankConfig) -> dict[str, Any]:
    """Pre-train per seed, fine-tune every arm, judge the claims, plot the delta spectrum."""
    from splice.training.experiment import run_experiment

    from splice_recipes.weight_delta import (
        energy_in_top,
        load_run_model,
        memory_figures,
        random_energy_in_top,
        relative_change,
        weight_deltas,
    )

    arms = config.arms()
    d = int(config.model.d_model)
    before: dict[int, dict[str, float]] = {}  # seed -> pre-trained accuracies
    full_gain: dict[int, float] = {}
    spectra: dict[int, dict[str, list[float]]] = {}

    def pretrained(seed: int) -> Path:
        folder = Path(config.run_dir()) / "shared" / f"seed-{seed}" / "pretrain"
        if seed not in before:
            exp = pinned(pretrain_config(config), config, seed=seed, folder=folder)
            run_experiment(exp, overwrite=True)
            from splice_recipes.study import mean_of_last_evals

            m = folder / "metrics.jsonl"
            before[seed] = {
                k: mean_of_last_evals(m, k, config.last_evals)
                for k in ("exact_match", "other/exact_match")
            }
            print(
                f"seed {seed} pre-trained: A {before[seed]['exact_match']:.1%}, "
                f"B {before[seed]['other/exact_match']:.1%}",
                flush=True,
            )
        return folder

    def run_one(arm: str, seed: int, folder: Path) -> dict[str, float]:
        base_dir = pretrained(seed)
        exp = finetune_config(config, arm, init_from=str(base_dir))
        out = run_arm(
            exp, config, seed=seed, folder=folder, metrics=("exact_match", "other/exact_match")
        )
        out["gain"] = out["exact_match"] - before[seed]["other/exact_match"]
        base = load_run_model(base_dir)
        deltas = weight_deltas(base, load_run_model(folder))
        out["relative_change"] = relative_change(deltas, base)
        out.update(memory_figures(load_run_model(folder, merge=False)))
        if arm == "full":
            full_gain[seed] = out["gain"]
            curve = energy_in_top(deltas, d)
            rand = random_energy_in_top(deltas, d, seed)
            spectra[seed] = {"full": curve, "random": rand}
            write_json(folder / "spectrum.json", spectra[seed])
            for r in sorted({*config.ranks, config.main_rank}):
                out[f"energy_top{r}"] = curve[min(r, d) - 1]
                out[f"random_energy_top{r}"] = rand[min(r, d) - 1]
        # no gain to recover (full fine-tuning did not learn B): counted as nothing recovered
        g = full_gain.get(seed, 0.0)
        out["recovered"] = out["gain"] / g if g > 0.01 else 0.0
        return out

    def extras(result: StudyResult) -> dict[str, Any]:
        png = plot_spectrum(spectra, Path(config.run_dir()) / "delta_spectrum.png", config)
        return {
            "pretrained": {str(s): v for s, v in before.items()},
            "spectra": {str(s): v for s, v in spectra.items()},
            "spectrum_plot": png.name,
            "side_table": side_table(result, arms),
        }

    return run_and_report(config, arms=arms, run_one=run_one, claims=claims(config), extras=extras)


def side_table(result: StudyResult, arms: list[str]) -> str:
    """Per arm, means over seeds: accuracy on B and A, gain recovered, params, time, memory."""
    lines = [
        "| arm | acc B (new) | acc A kept | gain recovered | trainable params | ms/step "
        "| ||dW||/||W|| | bytes/weight | training state KiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
        m = {
            k: result.interval(arm, k).mean
            for k in (
                "exact_match",
                "other/exact_match",
                "recovered",
                "trainable_params",
                "ms_per_step",
                "relative_change",
                "bytes_per_param",
                "training_state_bytes",
            )
        }
        lines.append(
            f"| {arm} | {m['exact_match']:.1%} | {m['other/exact_match']:.1%} "
            f"| {m['recovered']:.0%} | {int(m['trainable_params']):,} | {m['ms_per_step']:.1f} "
            f"| {m['relative_change']:.3f} | {m['bytes_per_param']:.3f} "
            f"| {m['training_state_bytes'] / 1024:.0f} |"
        )
    return "\n".join(lines)


def plot_spectrum(
    spectra: dict[int, dict[str, list[float]]], path: Path, config: LoRARankConfig
) -> Path:
    """Energy share in the top r directions of full fine-tuning's delta (one line per seed)
    and of Gaussian matrices of the same shapes; the LoRA ranks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (_, s) in enumerate(sorted(spectra.items())):
        r = range(1, len(s["full"]) + 1)
        ax.plot(r, s["full"], color="C0", lw=1.2, label="full FT delta" if i == 0 else None)
        ax.plot(
            r,
            s["random"],
            color="0.6",
            ls="--",
            lw=1,
            label="Gaussian, same shapes" if i == 0 else None,
        )
    for k in config.ranks:
        ax.axvline(k, color="C3" if k == config.main_rank else "0.85", lw=0.8, zorder=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("top r singular directions")
    ax.set_ylabel("share of squared singular values")
    ax.set_title(
        "fine-tuning delta: energy in the top r directions (mean over block matrices)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def config() -> LoRARankConfig:
    return LoRARankConfig()


recipe = Recipe(
    name="lora-rank",
    description="pre-train on addition, fine-tune on subtraction fully and with LoRA "
    "(r=1..32, alpha sweep, QLoRA) over seeds: delta spectrum, gain recovered, cost per rank",
    config=config,
    run=run,
)
