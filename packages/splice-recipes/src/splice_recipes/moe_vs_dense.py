"""Recipe ``moe-vs-dense``: does a mixture of experts add capacity at equal active compute?

Decoders that differ only in their FFN are trained from scratch on the same text, for the
same steps and tokens, over several seeds:

* ``dense``: SwiGLU of width ``3h``;
* ``moe<E>`` for E in 4, 8, 16, 32: E SwiGLU experts of width ``3h/2``, top-2, so a token
  uses the same FFN width ``3h`` as dense (active parameters equal up to the router's
  ``d x E``), while the total grows with E. Balancing: the Switch auxiliary loss (0.01).

The text is the ``markov_text`` task (``splice_recipes.markov_text``): a random order-2
Markov chain over 36 characters, 1,296 contexts with 4 possible next characters each. There
is no algorithm to find, only a table to store, so the held-out loss measures how much of
the table a model holds: a task where capacity matters. Each seed draws its own chain (its
``language_seed``), its own initialisation and data order; the chain's own loss on the
held-out sequences (the floor no model beats) is reported beside each run.

The learning rate is chosen per family (dense, and MoE on the ``tune_moe_arm``) on the dev
split of a tuning seed's own chain (seed 100: never reported), so each family is compared
at its own best. The metric is held-out cross-entropy (``log eval_perplexity``): the logged
``eval_loss`` of an MoE adds its weighted balancing loss, which is not a prediction cost.
Each run is read as the mean of its last evaluations.

Claims: each ``moe<E>`` has a lower held-out loss than dense (paired by seed), and 32
experts beat 4. Beside them, the step time of each arm against dense (wall and CPU: MoE
routing and gathers cost time at equal FLOPs), the parameters, and the expert load.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)
from splice.training.metrics import read_metrics

from splice_recipes.markov_text import MarkovTextTask, MarkovTextTaskConfig, check_split
from splice_recipes.study import (
    Claim,
    Clock,
    StudyResult,
    TunedStudyConfig,
    Tuning,
    every_arm,
    run_and_report,
    run_arm,
    seeds_in_workers,
    tune_in_workers,
)
from splice_recipes.study.tuning import tuning_extras

VOCAB = 52  # pad/bos/eos + the default character alphabet
Family = Literal["dense", "moe"]


def _default_train() -> TrainConfig:
    return TrainConfig(
        steps=600,
        batch_size=64,
        log_every=50,
        keep_last=1,
        checkpoint_every=600,
        num_threads=1,  # tiny matmuls: a second thread costs more in sync than it gains
        plot_curves=False,  # ~30 short runs: the plot would cost more than it tells
        optimizer=OptimizerConfig(lr=3e-3, betas=(0.9, 0.98), weight_decay=0.1),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=50, min_lr_ratio=0.05),
    )


class MoEVsDenseConfig(TunedStudyConfig):
    """Every arm trains the same decoder, data, steps and seeds; only the FFN differs.

    Attributes:
        d_model / n_layers / n_heads: the decoder shared by all arms (pre-norm, RMSNorm, RoPE).
        hidden: ``h``; dense's SwiGLU is ``3h`` wide, each expert ``3h/2`` (top-2).
        experts: the total expert counts compared with dense, one arm each.
        aux_loss_weight: the Switch load-balancing loss of every MoE arm.
        task: the ``markov_text`` language; each seed replaces its ``language_seed`` by the
            seed (every seed its own chain, the tuning seed too).
        train: the trainer settings of every run (its learning rate is replaced by the
            family's: ``dense_lr`` / ``moe_lr``).
        lrs: the learning rates tried on the dev split, per family (ties: the first listed).
        dense_lr / moe_lr: the family's learning rate; None chooses it on the dev split.
        tune_moe_arm: the MoE arm the MoE family's learning rate is chosen on.
        tuning_seeds: seeds of the dev-split runs (their own chains; never reported).
        eval_every: steps between evaluations (a run's result averages the last few).
        loss_batches: held-out batches of distinct sequences for the held-out loss.
        workers: seeds (and tuning runs) run at once, one process each; the figures do not
            depend on it.
    """

    name: str = "moe-vs-dense"
    seeds: PositiveInt = 5
    last_evals: PositiveInt = 2
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    hidden: PositiveInt = 64
    experts: list[PositiveInt] = Field(default_factory=lambda: [4, 8, 16, 32])
    aux_loss_weight: float = Field(default=0.01, ge=0.0)
    task: MarkovTextTaskConfig = Field(default_factory=MarkovTextTaskConfig)
    train: TrainConfig = Field(default_factory=_default_train)
    lrs: list[PositiveFloat] = Field(default_factory=lambda: [1e-3, 3e-3, 1e-2], min_length=1)
    dense_lr: PositiveFloat | None = None
    moe_lr: PositiveFloat | None = None
    tune_moe_arm: str = "moe8"
    eval_every: PositiveInt = 100
    loss_batches: PositiveInt = 16
    workers: PositiveInt = 2

    @model_validator(mode="after")
    def _checks(self) -> MoEVsDenseConfig:
        e = self.experts
        if len(set(e)) != len(e) or any(x < 2 for x in e):
            raise ValueError(f"experts: need distinct counts >= 2 (top-2 routing), got {e}")
        if self.tune_moe_arm not in self.arms()[1:]:
            raise ValueError(
                f"tune_moe_arm={self.tune_moe_arm!r} is not one of the MoE arms {self.arms()[1:]}"
            )
        if self.task.dev_fraction == 0:
            raise ValueError("task.dev_fraction: the learning rates are chosen on a dev split")
        return self

    def arms(self) -> list[str]:
        return ["dense", *[f"moe{e}" for e in self.experts]]

    def lr_of(self, arm: str) -> float:
        """The arm's family learning rate (set by ``run`` once chosen on the dev split)."""
        lr = self.dense_lr if family_of(arm) == "dense" else self.moe_lr
        if lr is None:
            raise ValueError(f"no learning rate for {arm!r} yet: run() chooses it on the dev split")
        return lr


def family_of(arm: str) -> Family:
    return "dense" if arm == "dense" else "moe"


def channel_mixer(config: MoEVsDenseConfig, arm: str) -> dict[str, Any]:
    """The FFN of an arm: dense SwiGLU ``3h``, or E experts of ``3h/2``, top-2."""
    h = config.hidden
    if arm == "dense":
        return {"type": "swiglu", "hidden_dim": 3 * h}
    e = int(arm.removeprefix("moe"))
    return {
        "type": "moe",
        "n_experts": e,
        "top_k": 2,
        "expert_hidden": 3 * h // 2,
        "aux_loss_weight": config.aux_loss_weight,
    }


def language(config: MoEVsDenseConfig, seed: int) -> MarkovTextTaskConfig:
    """The seed's chain: the study's task with ``language_seed = seed``."""
    return config.task.model_copy(update={"language_seed": seed})


def arm_experiment(
    config: MoEVsDenseConfig,
    arm: str,
    *,
    seed: int = 0,
    lr: float | None = None,
    split: Literal["held_out", "dev"] = "held_out",
) -> ExperimentConfig:
    """The ``ExperimentConfig`` of one arm on seed ``seed``'s chain, scored on ``split``
    (the study sets its seed, precision and folder); ``lr`` None: the family's."""
    max_len = config.task.length + 2  # bos + the sequence + eos
    train = config.train.model_copy(
        update={
            "optimizer": config.train.optimizer.model_copy(
                update={"lr": config.lr_of(arm) if lr is None else lr}
            )
        }
    )
    return ExperimentConfig(
        name=f"{config.name}-{arm}",
        model={
            "type": "decoder",
            "vocab_size": VOCAB,
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "max_seq_len": max_len,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": config.n_heads},
                "channel_mixer": channel_mixer(config, arm),
                "norm": {"type": "rmsnorm"},
            },
            "final_norm": {"type": "rmsnorm"},
        },
        data=DataConfig(task=language(config, seed), max_len=max_len),
        train=train,
        # no exact match: the next character is drawn at random, only its loss tells
        eval=EvalConfig(
            every=config.eval_every,
            split=split,
            loss_batches=config.loss_batches,
            exact_match_examples=0,
        ),
    )


def parameter_counts(exp: ExperimentConfig) -> tuple[int, int]:
    """``(total, active per token)`` parameters of the arm's model.

    Active = total minus, in each MoE layer, the routed experts a token does not use
    (``1 - k/E`` of the routed expert weights); the router and shared experts count fully.
    """
    import torch
    from splice.models.build import build_model
    from splice_moe.layer import MoELayer

    with torch.device("meta"):
        model = build_model(exp.model)
    total = sum(p.numel() for p in model.parameters())
    unused = 0.0
    for m in model.modules():
        if isinstance(m, MoELayer):
            routed = sum(p.numel() for p in m.experts.parameters())
            unused += routed * (1 - m.config.top_k / m.config.n_experts)
    return total, round(total - unused)


def held_out_ce(metrics_path: Path, last: int) -> float:
    """Mean over the last ``last`` evaluations of the held-out cross-entropy, read as
    ``log eval_perplexity`` (``eval_loss`` adds an MoE's balancing loss)."""
    values = [
        math.log(float(r["eval_perplexity"]))
        for r in read_metrics(metrics_path)
        if r.get("kind") == "eval" and r.get("eval_perplexity") is not None
    ]
    if not values:
        raise ValueError(f"{metrics_path}: no eval record has 'eval_perplexity'")
    return sum(values[-last:]) / len(values[-last:])


def load_balance(metrics_path: Path, tail: float = 0.2) -> float | None:
    """Mean over MoE layers and the last ``tail`` of training of the max/mean expert load."""
    train = [r for r in read_metrics(metrics_path) if r.get("kind") == "train"]
    train = train[-max(1, int(len(train) * tail)) :]
    values = [v for r in train for k, v in r.items() if k.endswith(".load_max_mean")]
    return sum(values) / len(values) if values else None


def chain_loss(config: MoEVsDenseConfig, exp: ExperimentConfig, seed: int, split: str) -> float:
    """The chain's own loss on exactly the sequences the run's held-out loss scores (the
    floor), after checking that every one of them belongs to ``split``."""
    from splice.training.experiment import loss_examples

    task = MarkovTextTask(language(config, seed))
    batches = loss_examples(task, split, config.loss_batches, exp.train.batch_size, seed)
    examples = [ex for batch in batches for ex in batch]
    check_split(task, examples, split)
    return task.optimal_loss(examples)


def train_and_score(
    config: MoEVsDenseConfig,
    arm: str,
    seed: int,
    folder: Path,
    *,
    lr: float | None = None,
    split: Literal["held_out", "dev"] = "held_out",
) -> dict[str, float]:
    """One run: train ``arm`` on seed ``seed``'s chain into ``folder``; its figures."""
    exp = arm_experiment(config, arm, seed=seed, lr=lr, split=split)
    cpu = time.process_time()  # this process's CPU: the run's compute, whatever the load
    out = run_arm(exp, config, seed=seed, folder=folder, metrics=())
    cpu = time.process_time() - cpu
    ce = held_out_ce(folder / "metrics.jsonl", config.last_evals)
    floor = chain_loss(config, exp, seed, split)
    total, active = parameter_counts(exp)
    lb = load_balance(folder / "metrics.jsonl")
    return {
        **out,
        "eval_ce": ce,
        "chain_ce": floor,
        "excess_ce": ce - floor,
        "cpu_ms_per_step": 1000.0 * cpu / exp.train.steps,
        "total_params": total,
        "active_params": active,
        "load_max_mean": float("nan") if lb is None else lb,
    }


def run_one(config: MoEVsDenseConfig, arm: str, seed: int, folder: Path) -> dict[str, float]:
    """One reported run (held-out split, the family's chosen learning rate)."""
    return train_and_score(config, arm, seed, folder)


#: every arm of one seed: one worker's share
run_seed = functools.partial(every_arm, run_one, MoEVsDenseConfig.arms)


def dev_run(config: MoEVsDenseConfig, arm: str, lr: float, seed: int) -> dict[str, float]:
    """One tuning run: ``arm`` at ``lr`` on the tuning seed's chain, scored on its dev split."""
    folder = Path(config.run_dir()) / "tuning" / f"{arm}-lr{lr:g}" / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    got = train_and_score(config, arm, seed, folder, lr=lr, split="dev")
    return {"dev_ce": got["eval_ce"], "chain_ce": got["chain_ce"]}


def choose_lrs(config: MoEVsDenseConfig) -> tuple[MoEVsDenseConfig, list[Tuning]]:
    """Each family's learning rate, chosen on the dev split (lowest mean dev loss over the
    tuning seeds) unless the config pins it; the config with both set, and the records."""
    todo = {
        fam: arm
        for fam, arm, pinned_lr in (
            ("dense", "dense", config.dense_lr),
            ("moe", config.tune_moe_arm, config.moe_lr),
        )
        if pinned_lr is None
    }
    tunings = dict(zip(todo, tune_in_workers(
        functools.partial(dev_run, config),
        {arm: config.lrs for arm in todo.values()},  # in the study's worker processes
        metric="dev_ce",
        seeds=config.tuning_seeds,
        workers=config.workers,
        direction="lower",
        names={arm: f"{fam} lr (on {arm})" for fam, arm in todo.items()},
    ), strict=True))  # fmt: skip
    update = {f"{fam}_lr": t.value for fam, t in tunings.items()}
    for fam, t in tunings.items():
        print(f"{fam}: chose lr {t.value:g} on the dev split (dev loss {t.scores[t.chosen]:.4f})")
    return config.model_copy(update=update), list(tunings.values())


CLAIM_TEXT = "MoE with {e} experts (top-2, equal active params) has lower held-out loss than dense"


def claims(config: MoEVsDenseConfig) -> list[Claim]:
    out = [
        Claim(f"moe{e}-beats-dense", f"moe{e}", "dense", "eval_ce", "lower",
              text=CLAIM_TEXT.format(e=e))
        for e in config.experts
    ]  # fmt: skip
    lo, hi = min(config.experts), max(config.experts)
    if lo != hi:
        out.append(
            Claim(f"moe{hi}-beats-moe{lo}", f"moe{hi}", f"moe{lo}", "eval_ce", "lower",
                  text=f"{hi} experts have lower held-out loss than {lo} (capacity grows with E)")
        )  # fmt: skip
    return out


def side_table(result: StudyResult, config: MoEVsDenseConfig) -> str:
    """Per arm: params, learning rate, held-out loss and its excess over the chain's own,
    step time against dense (wall and CPU, paired by seed), load balance; means over seeds."""
    lines = [
        "| arm | total params | active params | lr (dev) | held-out loss | over the chain's "
        "| ms/step | step time vs dense | CPU step time vs dense | load max/mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(arm: str, key: str) -> float:
        xs, ds = result.values(arm, key), result.values("dense", key)
        return sum(a / d for a, d in zip(xs, ds, strict=True)) / len(xs)

    for arm in config.arms():
        ce = result.interval(arm, "eval_ce")
        lb = [
            v
            for v in (result.figures[arm][s].get("load_max_mean") for s in result.seeds)
            if v is not None and v == v
        ]
        f = result.figures[arm][result.seeds[0]]
        lines.append(
            f"| {arm} | {int(f['total_params']):,} | {int(f['active_params']):,} "
            f"| {config.lr_of(arm):g} | {ce.mean:.4f} +- {ce.half_width:.4f} "
            f"| {result.interval(arm, 'excess_ce').mean:.4f} "
            f"| {result.interval(arm, 'ms_per_step').mean:.1f} | {ratio(arm, 'ms_per_step'):.2f}x "
            f"| {ratio(arm, 'cpu_ms_per_step'):.2f}x "
            f"| {f'{sum(lb) / len(lb):.2f}' if lb else '-'} |"
        )
    return "\n".join(lines)


def run(config: MoEVsDenseConfig) -> dict[str, Any]:
    """Choose each family's learning rate on the dev split, train every arm for every seed
    (seeds in worker processes), print the claims and the side table."""
    clock = Clock.start()  # the recorded times cover the dev-split choice too
    config, tunings = choose_lrs(config)

    def extras(result: StudyResult) -> dict[str, Any]:
        return {
            "lr": {"dense": config.dense_lr, "moe": config.moe_lr},
            "side_table": side_table(result, config),
            **tuning_extras(tunings),
        }

    return run_and_report(
        config,
        arms=config.arms(),
        run_one=seeds_in_workers(
            run_seed, config, lambda arm, seed, folder: run_one(config, arm, seed, folder)
        ),
        claims=claims(config),
        extras=extras,
        clock=clock,
        show=("dev_choice", "side_table"),
    )


def config() -> MoEVsDenseConfig:
    return MoEVsDenseConfig()


recipe = Recipe(
    name="moe-vs-dense",
    description="dense vs MoE with 4/8/16/32 experts (top-2) at equal active parameters and "
    "tokens on a language of stored rules (a random Markov chain), learning rates chosen on a "
    "dev split, over seeds: held-out loss claims with intervals, step time ratio, params",
    config=config,
    run=run,
)
