"""Recipe ``forgetting``: the trade-off between learning task B and keeping task A, per
method, as a study over seeds with each method's strength chosen on a dev split.

The seed claims that a lower learning rate, L2 regularization toward the start (L2-SP),
EWC, a KL penalty to the pre-trained model and LoRA (whose scale sets how far the model may
move) mitigate catastrophic forgetting. Each of them has a strength, and at full strength
any of them "keeps" task A by not learning task B at all; so a method is judged at the
strength that does best on a **dev split** by a stated rule (the mean of the two tasks'
accuracies), and then on the reported held-out split, over seeds, paired against full
fine-tuning: how much more of A it keeps, and how much of B it gives up for it.

The tasks share a skill the way pre-training and fine-tuning do. Task A (pre-training) is
two-digit addition, ``37+25=`` -> ``26`` (answer digits least-significant first). Task B
(fine-tuning) is the *same addition* asked with a new prompt end and answered in a new
output script, digits 0-9 written as the letters a-j: ``37+25:`` -> ``cg``. Learning B can
reuse A's carries and digit sums, and only the output format is new, as when a pre-trained
model is fine-tuned into a new format or language. The two prompts differ (``=`` vs
``:``), so one model can do both: forgetting here is not forced by the data.

Arms (``methods``; each a ``MethodConfig`` whose ``strength`` path takes each of its
``values`` on the dev split):

* ``full``: full fine-tuning at the base learning rate (the baseline of every claim);
* ``low_lr``: full fine-tuning at a lower learning rate (strength: the learning rate);
* ``l2sp`` / ``ewc`` / ``kl``: full fine-tuning + the splice-forgetting regularizer
  (strength: its weight; EWC's Fisher is estimated on task-A batches, mean-normalised);
* ``lora`` / ``qlora``: a LoRA adapter on every linear layer and the output head of the
  frozen base (QLoRA: the base quantized to NF4 first); strength: ``alpha`` at rank 8;
* ``replay``: full fine-tuning on a mixture of B with a share of task-A examples (strength:
  that share).

Per seed, one pre-training on A; every arm of that seed starts from it. The dev-split
choice runs on its own tuning seeds (disjoint from the reported ones, with their own
pre-training), so the reported runs never took part in a choice. Each run is read as the
mean of its last ``last_evals`` evaluations on every distinct problem of the split, for
both tasks. Output: the study folder (``study.json``, ``report.md``, a PNG per claim), the
dev-split record, a side table and ``frontier.png`` (task-B accuracy against task-A
retention, means with intervals).
"""

from __future__ import annotations

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
from splice.config import AdapterField, ModelField, RegularizerField, SpliceConfig, TaskField
from splice.overrides import apply_overrides
from splice.recipe import Recipe
from splice.training.configs import DataConfig, ExperimentConfig, ScheduleConfig, TrainConfig

from splice_recipes.common import addition_task, short_run, tiny_decoder, two_task_experiment
from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    mean_of_last_evals,
    pinned,
    run_and_report,
    run_arm,
    tune,
)
from splice_recipes.study.tuning import tuning_table

VOCAB = 52  # pad/bos/eos + the default character alphabet


class MethodConfig(SpliceConfig):
    """One fine-tuning method (an arm of the study) and the strengths tried for it on the dev
    split; the one chosen there is the arm's setting for every reported seed.

    Attributes:
        name: the method's label (the arm's name).
        strength: dotted path, inside this config, that each of ``values`` is written to
            (``"lr"``, ``"regularizers.0.weight"``, ``"adapter.alpha"``, ``"replay"``);
            None for a method with no strength (``values`` must then be empty).
        values: the candidate strengths, tried on the dev split in this order (on a tie the
            first listed wins: list the mildest first).
        lr: peak learning rate; None uses ``finetune.optimizer.lr``.
        regularizers: added to the SFT loss (splice-forgetting: ``l2sp``, ``ewc``, ``kl_reference``).
        adapter: e.g. ``{"type": "lora", ...}`` or ``{"type": "qlora", ...}``; freezes the base.
        replay: share of each fine-tuning batch drawn from task A (0: task B only).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    strength: str | None = None
    values: list[float] = Field(default_factory=list)
    lr: PositiveFloat | None = None
    regularizers: list[RegularizerField] = Field(default_factory=list)  # type: ignore[valid-type]
    adapter: AdapterField | None = None  # type: ignore[valid-type]
    replay: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _strength_path(self) -> MethodConfig:
        if self.strength is None:
            if self.values:
                raise ValueError(f"method {self.name!r}: values given but no strength path")
            return self
        if not self.values:
            raise ValueError(f"method {self.name!r}: strength={self.strength!r} needs values")
        if self.strength in ("name", "strength", "values") or self.strength.startswith("values."):
            raise ValueError(f"method {self.name!r}: strength cannot be {self.strength!r}")
        for value in self.values:  # each point must be a valid config (names the bad path)
            point(self, value)
        return self

    def points(self) -> list[tuple[float | None, MethodConfig]]:
        """``(strength value, the method config at that strength)``, one per candidate."""
        if self.strength is None:
            return [(None, self)]
        return [(v, point(self, v)) for v in self.values]


def point(method: MethodConfig, value: float) -> MethodConfig:
    """``method`` with ``value`` written at its ``strength`` path (validated)."""
    if value == int(value) and method.strength and method.strength.endswith(".r"):
        value = int(value)  # a rank is an integer
    return apply_overrides(
        method.model_copy(update={"strength": None, "values": []}),
        [f"{method.strength}={json.dumps(value)}"],
    )


#: Share of the operand pairs set aside as each task's dev split (hyperparameters are chosen
#: there); the reported held-out split is another 10%. A pair's split is the same in both
#: formats, so no dev or held-out pair is trained on by either task.
DEV_FRACTION = 0.1


def _old_task() -> dict[str, Any]:
    return addition_task(dev_fraction=DEV_FRACTION)


def _new_task() -> dict[str, Any]:
    # Same additions, new prompt end and output script: "37+25:" -> "cg" (= "26").
    return addition_task(separator=":", answer_digits="abcdefghij", dev_fraction=DEV_FRACTION)


def _default_pretrain() -> TrainConfig:
    # 2000 steps: 97% on the distinct held-out A problems (1000 steps reach 66%, and full
    # fine-tuning then learns 2% of B in 200 steps). Read once, at the end.
    schedule = ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05)
    return short_run(steps=2000, batch_size=64, lr=3e-3, log_every=100, schedule=schedule,
                     progress=False, plot_curves=False)  # fmt: skip


def _default_finetune() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=20, min_lr_ratio=0.1)
    # ~45 short runs: the curves plot would cost more than the training of each. 800 steps:
    # task B's new output script is learnt at a seed- and machine-dependent step. With 400,
    # seed 1's full fine-tune was still rising at the end under AVX2 float32 kernels (B 3 /
    # 17 / 37 / 45% at steps 100-400, against 84-87% with AVX512 ones); with 800 it reaches
    # 98% there, and tuning seeds 100-101 are flat from step 500-600 on both kernel classes.
    # A higher lr is no cure: 2e-3 over 600 steps left tuning seed 100 at 50% under AVX2.
    # Scored every 200 steps (the curve); a run is read at its end (``last_evals=1``).
    return short_run(steps=800, batch_size=64, lr=1e-3, log_every=50, schedule=schedule,
                     progress=False, plot_curves=False)  # fmt: skip


#: Every linear layer *and* the output head: task B answers with tokens (letters) the
#: pre-trained head never produced. With "all-linear" (head frozen) LoRA learned nothing of B
#: in 200 steps (0-0.5% at alpha 2-16) and still lost A; the usual practice for new output
#: tokens is to train the head too.
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,up,down,lm_head"


def _lora(kind: str) -> dict[str, Any]:
    extra = {"dropout": 0.0} if kind == "qlora" else {}  # QLoRA's default is 0.05; match LoRA
    return {"type": kind, "r": 8, "alpha": 16.0, "targets": LORA_TARGETS, **extra}


def _default_methods() -> list[MethodConfig]:
    ewc = {"type": "ewc", "weight": 1.0, "n_batches": 8, "normalize": "mean"}
    return [
        MethodConfig(name="full"),
        MethodConfig(name="low_lr", strength="lr", values=[5e-4, 3e-4, 1e-4, 3e-5]),
        MethodConfig(
            name="l2sp",
            strength="regularizers.0.weight",
            values=[0.01, 0.03, 0.1, 0.3],
            regularizers=[{"type": "l2sp", "weight": 0.1}],
        ),
        MethodConfig(
            name="ewc",
            strength="regularizers.0.weight",
            values=[1.0, 3.0, 10.0, 30.0],
            regularizers=[ewc],
        ),
        MethodConfig(
            name="kl",
            strength="regularizers.0.weight",
            values=[0.1, 0.3, 1.0],
            regularizers=[{"type": "kl_reference", "weight": 0.3}],
        ),
        # LoRA's usual learning rate is higher than full fine-tuning's (B starts at zero).
        MethodConfig(
            name="lora",
            strength="adapter.alpha",
            values=[8.0, 16.0, 32.0],
            lr=3e-3,
            adapter=_lora("lora"),
        ),
        MethodConfig(
            name="qlora",
            strength="adapter.alpha",
            values=[8.0, 16.0, 32.0],
            lr=3e-3,
            adapter=_lora("qlora"),
        ),
        MethodConfig(name="replay", strength="replay", values=[0.05, 0.1, 0.25]),
    ]


class ForgettingConfig(TunedStudyConfig):
    """Pre-train on ``old_task`` per seed, then fine-tune on ``new_task`` once per method at
    the strength chosen on the dev split.

    Attributes:
        model: the decoder (every arm of a seed starts from that seed's pre-trained weights).
        old_task / new_task: task A (pre-training) and task B (fine-tuning), each with a dev
            split (``dev_fraction``) for the choice of strengths.
        pretrain / finetune: trainer settings; a method's ``lr`` overrides ``finetune``'s.
        methods: the arms; the one named ``full`` (no strength) is every claim's baseline.
        tuning_seeds: seeds of the dev-split runs that choose each strength (disjoint from
            the reported seeds).
        eval_every: steps between evaluations of a fine-tuning run (its result is the mean
            of its last ``last_evals``).
        eval_examples: problems per task and split scored by greedy exact match (more than
            the split holds: every problem once, about 1,000 for 1-2 digit sums).
        reference_batches: task-A batches handed to the regularizers' ``setup``
            (EWC estimates its Fisher on them).
        b_cost_margin: the task-B accuracy (a fraction) a method may lose against full
            fine-tuning in its "costs at most" claim.
        plot: write ``frontier.png``.
    """

    name: str = "forgetting"
    seeds: PositiveInt = 3
    model: ModelField = Field(default_factory=lambda: tiny_decoder(VOCAB), validate_default=True)  # type: ignore[valid-type]
    old_task: TaskField = Field(default_factory=_old_task, validate_default=True)  # type: ignore[valid-type]
    new_task: TaskField = Field(default_factory=_new_task, validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=_default_finetune)
    methods: list[MethodConfig] = Field(default_factory=_default_methods, min_length=2)
    eval_every: PositiveInt = 200
    last_evals: PositiveInt = 1
    eval_examples: NonNegativeInt = 2000
    max_new_tokens: PositiveInt = 5
    reference_batches: PositiveInt = 8
    b_cost_margin: float = Field(default=0.10, ge=0.0, le=1.0)
    plot: bool = True

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[MethodConfig]) -> list[MethodConfig]:
        names = [m.name for m in methods]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"methods: names must be unique, {dupes} repeat")
        full = [m for m in methods if m.name == "full"]
        if not full or full[0].strength is not None:
            raise ValueError(
                "methods: need one named 'full' with no strength (every claim's baseline)"
            )
        return methods


def pretrain_config(config: ForgettingConfig, split: str = "held_out") -> ExperimentConfig:
    """Task A from scratch, scored on ``split`` at the end (task B too: the arms' start)."""
    return two_task_experiment(config, "pretrain", task=config.old_task,
                       others={"new": config.new_task}, train=config.pretrain, split=split)  # fmt: skip


def point_config(
    config: ForgettingConfig,
    method: MethodConfig,
    folder: str,
    init_from: str,
    split: str = "held_out",
) -> ExperimentConfig:
    """Task B (with ``method.replay`` of task A mixed in) from the pre-trained weights,
    scored on ``split`` every ``eval_every`` steps.

    Metrics: ``exact_match`` (task B) and ``old/exact_match`` (task A); with replay the
    run's own ``exact_match`` is on the mixture, and task B is scored as ``new/exact_match``.
    """
    train = config.finetune
    if method.lr is not None:
        train = train.model_copy(
            update={"optimizer": train.optimizer.model_copy(update={"lr": method.lr})}
        )
    task, others = config.new_task, {"old": config.old_task}
    if method.replay > 0:
        others = {"new": config.new_task, **others}
        task = {"type": "mixture", "tasks": [config.new_task, config.old_task],
                "weights": [1.0 - method.replay, method.replay]}  # fmt: skip
    reference = None
    if method.regularizers:  # EWC's Fisher (and any regularizer's setup) sees task A
        reference = DataConfig(task=config.old_task, max_len=config.max_len)
    return two_task_experiment(
        config,
        folder,
        task=task,
        others=others,
        train=train,
        split=split,
        every=config.eval_every,
        regularizers=method.regularizers,
        adapter=method.adapter,
        init_from=init_from,
        reference_data=reference,
        reference_batches=config.reference_batches,
    )


def strength_label(method: MethodConfig, value: float | None) -> str:
    """``"lr=1e-4"``, ``"weight=0.1"``, ``"alpha=4"``, ``"replay=5%"``; ``"-"`` for none."""
    if value is None or method.strength is None:
        return "-"
    key = method.strength.rsplit(".", 1)[-1]
    return f"replay={value:.0%}" if key == "replay" else f"{key}={value:g}"


def pareto_flags(points: list[tuple[float, float]]) -> list[bool]:
    """For each ``(retention, accuracy B)``: True unless another point is at least as good on
    both and strictly better on one (it is then *dominated*)."""
    return [
        not any(
            r2 >= r and b2 >= b and (r2 > r or b2 > b)
            for j, (r2, b2) in enumerate(points)
            if j != i
        )
        for i, (r, b) in enumerate(points)
    ]


def claims(config: ForgettingConfig) -> list[Claim]:
    """Per method other than ``full``: it keeps more of task A than full fine-tuning, and it
    costs at most ``b_cost_margin`` of task-B accuracy against it (non-inferiority)."""
    n = f"{config.b_cost_margin * 100:g}"
    out = []
    for m in config.methods:
        if m.name == "full":
            continue
        out.append(Claim(f"{m.name}-keeps-a", m.name, "full", "acc_a", "higher",
                         f"{m.name} keeps more of task A than full fine-tuning",
                         scale=100, unit=" pt"))  # fmt: skip
        out.append(Claim(f"{m.name}-b-cost", m.name, "full", "acc_b", "higher",
                         f"{m.name} loses at most {n} points of task B against full fine-tuning",
                         scale=100, unit=" pt", margin=-config.b_cost_margin))  # fmt: skip
    return out


def _read_point(folder: Path, method: MethodConfig, last: int) -> dict[str, float]:
    b_key = "new/exact_match" if method.replay > 0 else "exact_match"
    m = folder / "metrics.jsonl"
    return {
        "acc_b": mean_of_last_evals(m, b_key, last),
        "acc_a": mean_of_last_evals(m, "old/exact_match", last),
    }


def run(config: ForgettingConfig) -> dict[str, Any]:
    """Choose each method's strength on the dev split (tuning seeds), then run every arm over
    the reported seeds, judge the claims, write the study with the frontier plot.

    Returns:
        ``splice_recipes.study.summary`` of the study (``run_dir``, each claim's verdict).
    """
    from splice.training.experiment import run_experiment

    clock = Clock.start()  # the recorded times cover the dev-split choice too
    root = Path(config.run_dir())
    before: dict[int, dict[str, float]] = {}  # seed -> pre-trained accuracies (A, B)

    def pretrained(seed: int, split: str) -> Path:
        folder = root / "shared" / f"seed-{seed}" / "pretrain"
        if seed not in before:
            exp = pinned(pretrain_config(config, split), config, seed=seed, folder=folder)
            run_experiment(exp, overwrite=True)
            m = folder / "metrics.jsonl"
            before[seed] = {
                "acc_a": mean_of_last_evals(m, "exact_match", 1),
                "acc_b": mean_of_last_evals(m, "new/exact_match", 1),
            }
            print(f"seed {seed} pre-trained on task A ({split}): A {before[seed]['acc_a']:.1%}, "
                  f"B {before[seed]['acc_b']:.1%}", flush=True)  # fmt: skip
        return folder

    def fine_tune(method: MethodConfig, seed: int, folder: Path, split: str) -> dict[str, float]:
        name = folder.parent.name  # the arm (or tuning candidate) the run belongs to
        exp = point_config(config, method, name, str(pretrained(seed, split)), split)
        out = run_arm(exp, config, seed=seed, folder=folder, metrics=())
        return {**out, **_read_point(folder, method, config.last_evals)}

    # 1. each strength on the dev split, on the tuning seeds only
    tunings: list[Tuning] = []
    chosen: dict[str, MethodConfig] = {}
    for method in config.methods:
        if method.strength is None:
            chosen[method.name] = method
            continue

        def on_dev(value: float, seed: int, method: MethodConfig = method) -> dict[str, float]:
            i = method.values.index(value)
            folder = root / "tuning" / f"{method.name}-{i}" / f"seed-{seed}"
            got = fine_tune(point(method, value), seed, folder, "dev")
            return {**got, "mean_acc": (got["acc_a"] + got["acc_b"]) / 2}

        t = tune(method.name, method.values, on_dev, metric="mean_acc",
                 seeds=config.tuning_seeds)  # fmt: skip
        tunings.append(t)
        chosen[method.name] = point(method, t.value)
        print(f"{method.name}: chose {strength_label(method, t.value)} on the dev split "
              f"(dev mean accuracy {t.scores[t.chosen]:.1%})", flush=True)  # fmt: skip

    # 2. the chosen arms over the reported seeds, on the held-out split
    def run_one(arm: str, seed: int, folder: Path) -> dict[str, float]:
        out = fine_tune(chosen[arm], seed, folder, "held_out")
        pre_a = before[seed]["acc_a"]
        # retention is undefined when the start solves no A problem (tiny smoke runs only)
        out["retention_a"] = out["acc_a"] / pre_a if pre_a > 0 else 0.0
        return out

    def extras(result: StudyResult) -> dict[str, Any]:
        record: dict[str, Any] = {
            "pretrained": {str(s): v for s, v in before.items() if s in result.seeds},
            "tuning": [t.to_json() for t in tunings],
            "dev_choice": tuning_table(tunings, scale=100, unit="%") if tunings else "",
            "side_table": side_table(result, config, tunings),
        }
        if config.plot:
            png = plot_frontier(result, before, root / "frontier.png")
            record["frontier_plot"] = png.name
        return record

    return run_and_report(
        config,
        arms=[m.name for m in config.methods],
        run_one=run_one,
        claims=claims(config),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
    )


def side_table(result: StudyResult, config: ForgettingConfig, tunings: list[Tuning]) -> str:
    """Per arm: the strength chosen on dev, then means over seeds +- interval half-widths of
    task-B accuracy, task-A accuracy and retention, trainable parameters and ms/step; the
    arms on the frontier of the means are starred."""
    choice = {t.name: t.value for t in tunings}
    methods = {m.name: m for m in config.methods}
    arms = list(result.figures)
    means = {a: (result.interval(a, "retention_a").mean, result.interval(a, "acc_b").mean)
             for a in arms}  # fmt: skip
    front = dict(zip(arms, pareto_flags([means[a] for a in arms]), strict=True))
    lines = [
        "| arm | strength (dev) | task B acc | task A acc | A retained | frontier "
        "| trainable params | ms/step |",
        "|---|---|---:|---:|---:|:---:|---:|---:|",
    ]

    def cell(arm: str, metric: str) -> str:
        iv = result.interval(arm, metric)
        return f"{iv.mean:.1%} +- {iv.half_width:.1%}" if iv.n > 1 else f"{iv.mean:.1%}"

    for a in arms:
        lines.append(
            f"| {a} | {strength_label(methods[a], choice.get(a))} | {cell(a, 'acc_b')} "
            f"| {cell(a, 'acc_a')} | {cell(a, 'retention_a')} | {'*' if front[a] else ''} "
            f"| {int(result.interval(a, 'trainable_params').mean):,} "
            f"| {result.interval(a, 'ms_per_step').mean:.1f} |"
        )
    return "\n".join(lines)


def plot_frontier(result: StudyResult, before: dict[int, dict[str, float]], path: Path) -> Path:
    """``path`` (PNG): task-B accuracy against task-A retention, one point per arm at its
    mean over seeds with the 95% t interval of each axis as error bars, its seeds as faint
    dots; the pre-trained model (retention 100%) as a star."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for i, arm in enumerate(result.figures):
        color = f"C{i % 10}"
        xs = [100 * v for v in result.values(arm, "retention_a")]
        ys = [100 * v for v in result.values(arm, "acc_b")]
        ax.scatter(xs, ys, s=12, color=color, alpha=0.35)
        ix, iy = result.interval(arm, "retention_a"), result.interval(arm, "acc_b")
        finite = len(xs) > 1
        ax.errorbar(
            [100 * ix.mean], [100 * iy.mean],
            xerr=[[100 * ix.half_width]] if finite else None,
            yerr=[[100 * iy.half_width]] if finite else None,
            fmt="o", color=color, capsize=4, label=arm,
        )  # fmt: skip
    pre_b = [before[s]["acc_b"] for s in result.seeds if s in before]
    if pre_b:
        ax.scatter([100.0], [100 * sum(pre_b) / len(pre_b)], marker="*", s=150, color="black",
                   label="pre-trained")  # fmt: skip
    ax.set_xlabel("task A (addition) retained after fine-tuning, % of before")
    ax.set_ylabel("task B (addition in a new script) accuracy, %")
    ax.set_xlim(-3, 105)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"Forgetting trade-off: mean and 95% interval over {len(result.seeds)} seeds, "
        "strengths chosen on the dev split",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def config() -> ForgettingConfig:
    return ForgettingConfig()


def quick() -> ForgettingConfig:
    """A minutes-scale version for tests and smoke runs: a smaller model, fewer steps and
    problems, two reported seeds, the same arms with two candidate strengths each (figures
    are not meaningful)."""
    base = config()
    overrides = [
        "model.d_model=16", "model.n_layers=1", "pretrain.steps=4",
        "pretrain.schedule.warmup_steps=1", "finetune.steps=4", "finetune.schedule.warmup_steps=1",
        "pretrain.batch_size=8", "finetune.batch_size=8", "eval_examples=6", "eval_every=2",
        "last_evals=2", "seeds=2", "reference_batches=2", "methods.3.regularizers.0.n_batches=2",
        "progress=false",
    ]  # fmt: skip
    for i, m in enumerate(base.methods):
        if m.values:
            overrides.append(f"methods.{i}.values={json.dumps(m.values[:2])}")
    return apply_overrides(base, overrides)


recipe = Recipe(
    name="forgetting",
    description="pre-train on addition, fine-tune on addition in a new output script, over "
    "seeds: task-B accuracy and task-A retention of low LR, L2-SP, EWC, KL, LoRA, QLoRA and "
    "replay (strengths chosen on a dev split) against full fine-tuning, with intervals",
    config=config,
    run=run,
)
