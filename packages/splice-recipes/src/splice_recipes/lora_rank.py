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
* step time and trainable parameters grow with r: the time is the median of many steps
  timed back to back in one process, the arms interleaved round by round (a run's own
  time per step swings by 2x on a loaded machine), with the FLOPs of a step beside it;
* a QLoRA arm (NF4 base) at the main rank: bytes per weight and training-state memory
  next to LoRA's.

Learning rates are chosen on a **dev split** (problems neither trained on nor reported),
on a tuning seed that is not reported, with its own pre-training, by the highest dev
accuracy on B: full fine-tuning's among ``full_lr_candidates``, and each rank's (at
``alpha = 2r``) among ``lora_lr_candidates`` (one rate shared by every rank let r=32
diverge at the rate r=8 preferred). The alpha arms and QLoRA use their rank's rate: the
alpha sweep asks how far the scale moves the model at a fixed rate. Every arm of a reported
seed starts from that seed's pre-trained model; the dev candidates, then the seeds, run in
``workers`` processes.
"""

from __future__ import annotations

import functools
import json
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
from splice.training.configs import ExperimentConfig, ScheduleConfig, TrainConfig

from splice_recipes.common import addition_task, short_run, tiny_decoder, two_task_experiment
from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    every_arm,
    mean_of_last_evals,
    pinned,
    run_and_report,
    run_arm,
    seeds_in_workers,
    tune_in_workers,
)
from splice_recipes.study.report import write_json
from splice_recipes.study.tuning import tuning_extras

VOCAB = 52  # pad/bos/eos + the default character alphabet

#: Share of each task's operand pairs set aside as its dev split (learning rates are chosen
#: there); the reported held-out split is another 10%, and training uses the rest.
DEV_FRACTION = 0.1


def _old_task() -> dict[str, Any]:
    return addition_task("+", dev_fraction=DEV_FRACTION)


def _new_task() -> dict[str, Any]:
    return addition_task("-", dev_fraction=DEV_FRACTION)


def _default_pretrain() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05)
    return short_run(steps=1000, batch_size=64, lr=3e-3, log_every=100, schedule=schedule,
                     progress=False, plot_curves=False)  # fmt: skip


def _default_finetune() -> TrainConfig:
    # 600 steps: at 300 (the first design) full fine-tuning had learnt 12-34% of B and the
    # gain one seed's LoRA "recovered" was a ratio of two small, noisy numbers. The learning
    # rate is replaced by the arm's (chosen on the dev split).
    schedule = ScheduleConfig(kind="cosine", warmup_steps=30, min_lr_ratio=0.1)
    return short_run(steps=600, batch_size=64, lr=1e-3, log_every=100, schedule=schedule,
                     progress=False, plot_curves=False)  # fmt: skip


class LoRARankConfig(TunedStudyConfig):
    """Pre-train on ``old_task`` per seed; fine-tune on ``new_task`` fully and with LoRA.

    Attributes:
        ranks: LoRA ranks swept at ``alpha = 2r``; must include ``main_rank``.
        main_rank: the small rank the claims are about (<= d/8).
        alphas_over_r: extra ``alpha / r`` values tried at ``main_rank`` (the alpha sweep).
        qlora: add a QLoRA arm (NF4 base) at ``main_rank``.
        targets: LoRA targets (``splice-lora``'s syntax), the same for every arm.
        learning_rates: peak learning rate per tuned arm (``full`` and each ``r<k>``; see
            ``lr_arm``); an arm missing here (all, by default) is chosen on the dev split.
        full_lr_candidates / lora_lr_candidates: the values tried on the dev split for
            ``full`` and for each rank (``alpha = 2r``), by the highest dev accuracy on
            ``new_task``; list the mildest first (ties go to the first).
        tuning_seeds: seeds of the dev-split runs (their own pre-training), disjoint from
            the reported seeds.
        eval_every: steps between the fine-tunes' evaluations (the result averages the last
            ``last_evals``).
        eval_examples: exact-match problems per task (more than the split: each once).
        timed_rounds: steps per arm timed for the median step time (per seed, the arms
            interleaved round by round in one process).
        workers: seeds run at once, one process each (every run uses one thread; the
            figures do not depend on it).
    """

    name: str = "lora-rank"
    seeds: PositiveInt = 4
    last_evals: PositiveInt = 2  # steps 500 and 600
    model: ModelField = Field(default_factory=lambda: tiny_decoder(VOCAB), validate_default=True)  # type: ignore[valid-type]
    old_task: TaskField = Field(default_factory=_old_task, validate_default=True)  # type: ignore[valid-type]
    new_task: TaskField = Field(default_factory=_new_task, validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=_default_finetune)
    ranks: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 8, 32])
    main_rank: PositiveInt = 8
    alphas_over_r: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 8.0])
    qlora: bool = True
    targets: str = "all-linear"
    learning_rates: dict[str, PositiveFloat] = Field(default_factory=dict)
    full_lr_candidates: list[PositiveFloat] = Field(
        default_factory=lambda: [1e-3, 3e-3, 1e-2], min_length=1
    )
    lora_lr_candidates: list[PositiveFloat] = Field(
        default_factory=lambda: [3e-3, 1e-2, 3e-2], min_length=1
    )
    eval_every: PositiveInt = 100
    eval_examples: NonNegativeInt = 2000
    max_new_tokens: PositiveInt = 5
    timed_rounds: PositiveInt = 30
    workers: PositiveInt = 2

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

    @model_validator(mode="after")
    def _learning_rates_of_tuned_arms(self) -> LoRARankConfig:
        unknown = sorted(set(self.learning_rates) - set(tuned_arms(self)))
        if unknown:
            raise ValueError(
                f"learning_rates: {unknown} are not tuned arms {tuned_arms(self)} (an alpha "
                "or QLoRA arm uses its rank's rate)"
            )
        return self

    def arms(self) -> list[str]:
        """``full`` first (it pre-trains the seed, and the others' gain is read against
        it), then ranks, alphas, QLoRA."""
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


def tuned_arms(config: LoRARankConfig) -> list[str]:
    """The arms whose learning rate is chosen on the dev split: ``full`` and each rank."""
    return ["full", *[f"r{k}" for k in config.ranks]]


def lr_arm(arm: str) -> str:
    """The tuned arm whose learning rate ``arm`` uses: its own for ``full`` and ``r<k>``,
    the rank's for an alpha arm (``r8-a0.5`` -> ``r8``) and for QLoRA (``qlora-r8``)."""
    return arm.removeprefix("qlora-").partition("-a")[0]


def lr_of(config: LoRARankConfig, arm: str) -> float:
    """The arm's peak learning rate (``learning_rates[lr_arm(arm)]``).

    Raises:
        ValueError: it is not set yet (``run`` chooses it on the dev split first).
    """
    lr = config.learning_rates.get(lr_arm(arm))
    if lr is None:
        raise ValueError(
            f"learning_rates[{lr_arm(arm)!r}] is not set: choose it on the dev split first "
            "(run does)"
        )
    return float(lr)


def check_splits(config: LoRARankConfig) -> None:
    """Raise unless, in both tasks, the dev and held-out problems are disjoint from each
    other and from the training problems (learning rates are chosen on dev, never on the
    reported held-out split).

    Raises:
        ValueError: a task has no dev split (names the field).
        RuntimeError: a problem is in two splits (names the task and split).
    """
    from splice.data.arithmetic import check_disjoint
    from splice.training.experiment import build_task

    for field in ("old_task", "new_task"):
        task = build_task(getattr(config, field))
        if not hasattr(task, "all_examples") or getattr(task, "dev_fraction", 0.0) <= 0.0:
            raise ValueError(f"{field}: need an arithmetic task with dev_fraction > 0")
        train = {ex.prompt for ex in task.all_examples("train")}
        dev, held_out = task.all_examples("dev"), task.all_examples("held_out")
        check_disjoint(dev, train, where=f"{field} dev")
        check_disjoint(held_out, train, where=f"{field} held_out")
        check_disjoint(dev, {ex.prompt for ex in held_out}, where=f"{field} dev vs held_out")


def pretrain_config(config: LoRARankConfig, split: str = "held_out") -> ExperimentConfig:
    """Task A from scratch, scored on ``split`` at the end (task B too: every arm's start)."""
    return two_task_experiment(config, "pretrain", task=config.old_task,
                               others={"other": config.new_task}, train=config.pretrain,
                               split=split)  # fmt: skip


def finetune_config(
    config: LoRARankConfig,
    arm: str,
    init_from: str,
    *,
    lr: float | None = None,
    split: str = "held_out",
) -> ExperimentConfig:
    """Task B from the pre-trained weights as ``arm`` says, at ``lr`` (default: the arm's,
    ``lr_of``), scored on ``split`` every ``eval_every`` steps (task A as ``other``)."""
    train = config.finetune
    rate = lr_of(config, arm) if lr is None else lr
    train = train.model_copy(update={"optimizer": train.optimizer.model_copy(update={"lr": rate})})
    return two_task_experiment(config, arm, task=config.new_task,
                               others={"other": config.old_task}, train=train, split=split,
                               every=config.eval_every, init_from=init_from,
                               adapter=adapter_of(config, arm))  # fmt: skip


def pretrain(config: LoRARankConfig, seed: int, folder: Path, split: str) -> dict[str, float]:
    """Pre-train task A into ``folder``; the accuracies on A and B scored on ``split``."""
    from splice.training.experiment import run_experiment

    run_experiment(pinned(pretrain_config(config, split), config, seed=seed, folder=folder),
                   overwrite=True)  # fmt: skip
    m = folder / "metrics.jsonl"
    got = {"acc_a": mean_of_last_evals(m, "exact_match", 1),
           "acc_b": mean_of_last_evals(m, "other/exact_match", 1)}  # fmt: skip
    print(f"seed {seed} pre-trained ({split}): A {got['acc_a']:.1%}, B {got['acc_b']:.1%}",
          flush=True)  # fmt: skip
    return got


def tuning_start(config: LoRARankConfig, seed: int) -> Path:
    """``<study>/tuning/shared/seed-<s>/pretrain``: a tuning seed's pre-trained model."""
    return Path(config.run_dir()) / "tuning" / "shared" / f"seed-{seed}" / "pretrain"


def dev_run(config: LoRARankConfig, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One dev-split candidate: ``arm`` fine-tuned at ``lr`` from the tuning seed's start,
    scored on B's (and A's) dev split."""
    exp = finetune_config(config, arm, str(tuning_start(config, seed)), lr=lr, split="dev")
    folder = Path(config.run_dir()) / "tuning" / f"{arm}-lr{lr:g}" / f"seed-{seed}"
    return run_arm(exp, config, seed=seed, folder=folder,
                   metrics=("exact_match", "other/exact_match"))  # fmt: skip


def choose_learning_rates(config: LoRARankConfig) -> tuple[LoRARankConfig, list[Tuning]]:
    """``config`` with the learning rate of every tuned arm chosen on the dev split (those
    already in ``learning_rates`` are kept, not tuned), and the record of each choice.

    Each tuning seed pre-trains its own start; each candidate fine-tunes from it and is
    scored on B's dev split; the candidates run in ``workers`` processes.
    """
    check_splits(config)
    todo = [a for a in tuned_arms(config) if a not in config.learning_rates]
    if not todo:
        return config, []
    for seed in config.tuning_seeds:
        pretrain(config, seed, tuning_start(config, seed), "dev")

    tunings = tune_in_workers(
        functools.partial(dev_run, config),
        {a: config.full_lr_candidates if a == "full" else config.lora_lr_candidates for a in todo},
        metric="exact_match",
        seeds=config.tuning_seeds,
        workers=config.workers,
        names={a: f"{a} lr" for a in todo},
    )
    chosen = dict(config.learning_rates)
    for arm, t in zip(todo, tunings, strict=True):
        chosen[arm] = t.value
        print(f"{arm}: lr {t.value:g} chosen on the dev split (dev accuracy on B "
              f"{t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip
    return config.model_copy(update={"learning_rates": chosen}), tunings


def step_costs(config: LoRARankConfig, base_dir: Path, seed: int) -> dict[str, dict[str, float]]:
    """Per arm whose step costs differ (an alpha arm costs what its rank does): the median
    milliseconds of a training step (``timed_rounds`` steps, arms interleaved) as
    ``step_ms``, and the FLOPs of its forward + backward as ``flops_per_step`` (not for
    QLoRA: the counter sees no FLOPs in its 4-bit matmul)."""
    import torch
    from splice.training.experiment import build_experiment_model
    from splice.training.optimizer import build_optimizer
    from splice.training.threads import torch_threads

    from splice_recipes.step_cost import median_step_ms, step_flops

    torch.manual_seed(seed)  # the adapters' initialisation
    # one batch of the fine-tunes' shape: a step's cost does not depend on the token values
    shape = (config.finetune.batch_size, config.max_len)
    ids = torch.randint(0, int(config.model.vocab_size), shape,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    steps, flops = {}, {}
    for arm in [a for a in config.arms() if "-a" not in a]:
        exp = finetune_config(config, arm, str(base_dir))
        model = build_experiment_model(exp)
        steps[arm] = (model, build_optimizer(model, exp.train.optimizer))
        if not arm.startswith("qlora-"):
            flops[arm] = float(step_flops(model, ids))
    with torch_threads(config.finetune.num_threads):
        ms = median_step_ms(steps, ids, rounds=config.timed_rounds)
    return {a: {"step_ms": ms[a], **({"flops_per_step": flops[a]} if a in flops else {})}
            for a in steps}  # fmt: skip


def seed_dir(config: LoRARankConfig, seed: int) -> Path:
    """``<study>/shared/seed-<s>``: the seed's pre-trained model and ``seed.json``."""
    return Path(config.run_dir()) / "shared" / f"seed-{seed}"


def run_one(config: LoRARankConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One arm of one seed. ``full`` runs first: it pre-trains the seed, times every arm's
    step, and writes ``seed.json`` (start accuracies, step costs, its own gain on B), which
    the other arms read."""
    from splice_recipes.weight_delta import (
        energy_in_top,
        load_run_model,
        memory_figures,
        random_energy_in_top,
        relative_change,
        weight_deltas,
    )

    shared = seed_dir(config, seed)
    base_dir = shared / "pretrain"
    if arm == "full":
        record: dict[str, Any] = {"pretrained": pretrain(config, seed, base_dir, "held_out")}
        record["step_costs"] = step_costs(config, base_dir, seed)
    else:
        record = json.loads((shared / "seed.json").read_text())
    exp = finetune_config(config, arm, init_from=str(base_dir))
    out = run_arm(exp, config, seed=seed, folder=folder,
                  metrics=("exact_match", "other/exact_match"))  # fmt: skip
    out["gain"] = out["exact_match"] - record["pretrained"]["acc_b"]
    base = load_run_model(base_dir)
    deltas = weight_deltas(base, load_run_model(folder))
    out["relative_change"] = relative_change(deltas, base)
    out.update(memory_figures(load_run_model(folder, merge=False)))
    out.update(record["step_costs"].get(arm, {}))
    if arm == "full":
        d = int(config.model.d_model)
        curve, rand = energy_in_top(deltas, d), random_energy_in_top(deltas, d, seed)
        write_json(folder / "spectrum.json", {"full": curve, "random": rand})
        for r in sorted({*config.ranks, config.main_rank}):
            out[f"energy_top{r}"] = curve[min(r, d) - 1]
            out[f"random_energy_top{r}"] = rand[min(r, d) - 1]
        out["pretrained_a"], out["pretrained_b"] = (record["pretrained"]["acc_a"],
                                                    record["pretrained"]["acc_b"])  # fmt: skip
        record["full_gain"] = out["gain"]
        write_json(shared / "seed.json", record)
    # no gain to recover (full fine-tuning did not learn B): counted as nothing recovered
    g = record["full_gain"]
    out["recovered"] = out["gain"] / g if g > 0.01 else 0.0
    return out


def study_arms(config: LoRARankConfig) -> list[str]:
    return config.arms()


#: every arm of one seed, in order (``full`` first): one worker's share
run_seed = functools.partial(every_arm, run_one, study_arms)


CLAIMS_TEXT = {
    "delta-low-rank": "over half of full fine-tuning's weight change lies in its top {r} "
    "of {d} singular directions",
    "small-rank-recovers": "LoRA r={r} (<= d/8) recovers at least 80% of full fine-tuning's "
    "gain on the new task",
    "rank-helps": "LoRA r={r} beats r=1 on the new task",
    "alpha-moves": "a larger alpha/r moves the weights further (alpha/r {hi:g} vs {lo:g})",
    "rank-costs-time": "a LoRA step at r={top} is slower than at r=1 (median of interleaved "
    "timed steps)",
    "qlora-smaller": "QLoRA r={r} holds the model in fewer bytes than LoRA r={r}",
}


def claims(config: LoRARankConfig) -> list[Claim]:
    r, d = config.main_rank, int(config.model.d_model)
    lo, hi = min(config.alphas_over_r), max(config.alphas_over_r)
    top = max(config.ranks)
    t = {k: v.format(r=r, d=d, lo=lo, hi=hi, top=top) for k, v in CLAIMS_TEXT.items()}
    pt = {"scale": 100, "unit": " pt"}
    out = [
        Claim("delta-low-rank", "full", 0.5, f"energy_top{r}", "higher", t["delta-low-rank"], **pt),
        Claim("small-rank-recovers", f"r{r}", 0.8, "recovered", "higher",
              t["small-rank-recovers"], **pt),
    ]  # fmt: skip
    if 1 in config.ranks and r != 1:
        out.append(Claim("rank-helps", f"r{r}", "r1", "exact_match", "higher", t["rank-helps"],
                         **pt))  # fmt: skip
    if len(config.alphas_over_r) >= 2:
        out.append(Claim("alpha-moves", f"r{r}-a{hi:g}", f"r{r}-a{lo:g}", "relative_change",
                         "higher", t["alpha-moves"]))  # fmt: skip
    if 1 in config.ranks and top > 1:
        out.append(Claim("rank-costs-time", f"r{top}", "r1", "step_ms", "higher",
                         t["rank-costs-time"], unit=" ms"))  # fmt: skip
    if config.qlora:
        out.append(Claim("qlora-smaller", f"qlora-r{r}", f"r{r}", "weight_bytes", "lower",
                         t["qlora-smaller"], scale=1 / 1024, unit=" KiB"))  # fmt: skip
    return out


def run(config: LoRARankConfig) -> dict[str, Any]:
    """Choose the learning rates on the dev split, then fine-tune every arm over the
    reported seeds (in ``workers`` processes), judge the claims, plot the delta spectrum.

    Returns:
        ``splice_recipes.study.summary`` of the study (``run_dir``, each claim's verdict).
    """
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    config, tunings = choose_learning_rates(config)
    arms = config.arms()

    def extras(result: StudyResult) -> dict[str, Any]:
        spectra = {
            s: json.loads((config.arm_dir("full", s) / "spectrum.json").read_text())
            for s in result.seeds
        }
        png = plot_spectrum(spectra, Path(config.run_dir()) / "delta_spectrum.png", config)
        full = result.figures["full"]
        return {
            "learning_rates": dict(config.learning_rates),
            **tuning_extras(tunings, scale=100, unit="%"),
            "pretrained": {
                str(s): {"acc_a": full[s]["pretrained_a"], "acc_b": full[s]["pretrained_b"]}
                for s in result.seeds
            },
            "spectra": {str(s): v for s, v in spectra.items()},
            "spectrum_plot": png.name,
            "side_table": side_table(result, config),
        }

    return run_and_report(
        config,
        arms=arms,
        run_one=seeds_in_workers(
            run_seed, config, lambda arm, seed, folder: run_one(config, arm, seed, folder)
        ),
        claims=claims(config),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
    )


def side_table(result: StudyResult, config: LoRARankConfig) -> str:
    """Per arm, means over seeds: its learning rate, accuracy on B and A, gain recovered,
    trainable parameters, step FLOPs and median step time, how far it moved, memory."""
    lines = [
        "| arm | lr (dev) | acc B (new) | acc A kept | gain recovered | trainable params "
        "| MFLOPs/step | median ms/step | ||dW||/||W|| | bytes/weight | training state KiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in result.figures:
        first = next(iter(result.figures[arm].values()))

        def mean(metric: str, arm: str = arm) -> float:
            return result.interval(arm, metric).mean

        flops = f"{mean('flops_per_step') / 1e6:.0f}" if "flops_per_step" in first else "-"
        ms = f"{mean('step_ms'):.1f}" if "step_ms" in first else "-"
        lines.append(
            f"| {arm} | {lr_of(config, arm):g} | {mean('exact_match'):.1%} "
            f"| {mean('other/exact_match'):.1%} | {mean('recovered'):.0%} "
            f"| {int(mean('trainable_params')):,} | {flops} | {ms} "
            f"| {mean('relative_change'):.3f} | {mean('bytes_per_param'):.3f} "
            f"| {mean('training_state_bytes') / 1024:.0f} |"
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
        ax.plot(r, s["random"], color="0.6", ls="--", lw=1,
                label="Gaussian, same shapes" if i == 0 else None)  # fmt: skip
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
    "(r=1..32, alpha sweep, QLoRA; learning rates chosen on a dev split) over seeds: delta "
    "spectrum, gain recovered, FLOPs and median step time per rank",
    config=config,
    run=run,
)
