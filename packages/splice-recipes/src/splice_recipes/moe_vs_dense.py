"""Recipe ``moe-vs-dense``: does a mixture of experts add capacity at equal active compute?

Decoders that differ only in their FFN are trained from scratch on the same problems (1-2
digit multiplication, a lookup-heavy task where capacity should help), for the same steps
and tokens, over several seeds:

* ``dense``: SwiGLU of width ``3h``;
* ``moe<E>`` for E in 4, 8, 16, 32: E SwiGLU experts of width ``3h/2``, top-2, so a token
  uses the same FFN width ``3h`` as dense (active parameters equal up to the router's
  ``d x E``), while the total grows with E. Balancing: the Switch auxiliary loss (0.01).

Each run is read as the mean of its last evaluations: held-out loss on distinct held-out
problems, and exact match on the whole held-out split. Claims: each ``moe<E>`` has a lower
held-out loss than dense (paired by seed). Beside them, the step time of each arm against
dense (MoE routing and gathers cost time at equal FLOPs) and the total/active parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator
from splice.config import TaskField
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

from splice_recipes.study import Claim, StudyConfig, StudyResult, run_and_report, run_arm

VOCAB = 52  # pad/bos/eos + the default character alphabet


def _default_train() -> TrainConfig:
    return TrainConfig(
        steps=600,
        batch_size=64,
        log_every=20,
        keep_last=1,
        checkpoint_every=600,
        num_threads=1,  # tiny matmuls: a second thread costs more in sync than it gains
        optimizer=OptimizerConfig(lr=3e-3, betas=(0.9, 0.98), weight_decay=0.1),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=50, min_lr_ratio=0.05),
    )


class MoEVsDenseConfig(StudyConfig):
    """Every arm trains the same decoder, data, steps and seeds; only the FFN differs.

    Attributes:
        d_model / n_layers / n_heads: the decoder shared by all arms (pre-norm, RMSNorm, RoPE).
        hidden: ``h``; dense's SwiGLU is ``3h`` wide, each expert ``3h/2`` (top-2).
        experts: the total expert counts compared with dense, one arm each.
        aux_loss_weight: the Switch load-balancing loss of every MoE arm.
        task: the built-in task trained and evaluated on.
        eval_every: steps between evaluations (a run's result averages the last few).
        eval_examples: exact-match problems (more than the split: each held-out problem once).
        loss_batches: held-out batches (one distinct draw) for the held-out loss.
    """

    name: str = "moe-vs-dense"
    seeds: PositiveInt = 3
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    hidden: PositiveInt = 64
    experts: list[PositiveInt] = Field(default_factory=lambda: [4, 8, 16, 32])
    aux_loss_weight: float = Field(default=0.01, ge=0.0)
    task: TaskField = Field(  # type: ignore[valid-type]
        default_factory=lambda: {
            "type": "arithmetic",
            "op": "*",
            "min_digits": 1,
            "max_digits": 2,
            "reverse_answer": True,
        },
        validate_default=True,
    )
    max_len: PositiveInt = 16
    train: TrainConfig = Field(default_factory=_default_train)
    eval_every: PositiveInt = 100
    eval_examples: NonNegativeInt = 2000
    loss_batches: NonNegativeInt = 8
    max_new_tokens: PositiveInt = 6

    @field_validator("experts")
    @classmethod
    def _experts(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(e < 2 for e in v):
            raise ValueError(f"experts: need distinct counts >= 2 (top-2 routing), got {v}")
        return v

    def arms(self) -> list[str]:
        return ["dense", *[f"moe{e}" for e in self.experts]]


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


def arm_experiment(config: MoEVsDenseConfig, arm: str) -> ExperimentConfig:
    """The ``ExperimentConfig`` of one arm (the study sets its seed, precision and folder)."""
    return ExperimentConfig(
        name=f"{config.name}-{arm}",
        model={
            "type": "decoder",
            "vocab_size": VOCAB,
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "max_seq_len": config.max_len,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": config.n_heads},
                "channel_mixer": channel_mixer(config, arm),
                "norm": {"type": "rmsnorm"},
            },
            "final_norm": {"type": "rmsnorm"},
        },
        data=DataConfig(task=config.task, max_len=config.max_len),
        train=config.train,
        eval=EvalConfig(
            every=config.eval_every,
            loss_batches=config.loss_batches,
            exact_match_examples=config.eval_examples,
            max_new_tokens=config.max_new_tokens,
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


def load_balance(metrics_path: Path, tail: float = 0.2) -> float | None:
    """Mean over MoE layers and the last ``tail`` of training of the max/mean expert load."""
    records = [json.loads(s) for s in metrics_path.read_text().splitlines() if s.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    train = train[-max(1, int(len(train) * tail)) :]
    values = [v for r in train for k, v in r.items() if k.endswith(".load_max_mean")]
    return sum(values) / len(values) if values else None


CLAIM_TEXT = "MoE with {e} experts (top-2, equal active params) has lower held-out loss than dense"


def claims(config: MoEVsDenseConfig) -> list[Claim]:
    return [
        Claim(
            f"moe{e}-beats-dense",
            f"moe{e}",
            "dense",
            "eval_loss",
            "lower",
            text=CLAIM_TEXT.format(e=e),
        )
        for e in config.experts
    ]


def side_table(result: StudyResult, config: MoEVsDenseConfig) -> str:
    """Per arm: params, held-out loss and accuracy, step time and its ratio to dense (paired
    by seed), load balance; means over seeds."""
    lines = [
        "| arm | total params | active params | held-out loss | held-out accuracy | ms/step "
        "| step time vs dense | load max/mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    dense = result.values("dense", "ms_per_step")
    for arm in config.arms():
        ms = result.values(arm, "ms_per_step")
        ratio = sum(a / d for a, d in zip(ms, dense, strict=True)) / len(ms)
        lb = [
            v
            for v in (result.figures[arm][s].get("load_max_mean") for s in result.seeds)
            if v is not None and v == v
        ]
        f = result.figures[arm][result.seeds[0]]
        lines.append(
            f"| {arm} | {int(f['total_params']):,} | {int(f['active_params']):,} "
            f"| {result.interval(arm, 'eval_loss').mean:.4f} "
            f"| {result.interval(arm, 'exact_match').mean:.1%} | {sum(ms) / len(ms):.1f} "
            f"| {ratio:.2f}x | {f'{sum(lb) / len(lb):.2f}' if lb else '-'} |"
        )
    return "\n".join(lines)


def run(config: MoEVsDenseConfig) -> dict[str, Any]:
    """Train every arm for every seed; print the claims and the side table."""

    def run_one(arm: str, seed: int, folder: Path) -> dict[str, float]:
        exp = arm_experiment(config, arm)
        out = run_arm(exp, config, seed=seed, folder=folder)
        total, active = parameter_counts(exp)
        lb = load_balance(folder / "metrics.jsonl")
        return {
            **out,
            "total_params": total,
            "active_params": active,
            "load_max_mean": float("nan") if lb is None else lb,
        }

    return run_and_report(
        config,
        arms=config.arms(),
        run_one=run_one,
        claims=claims(config),
        extras=lambda r: {"side_table": side_table(r, config)},
    )


def config() -> MoEVsDenseConfig:
    return MoEVsDenseConfig()


recipe = Recipe(
    name="moe-vs-dense",
    description="dense vs MoE with 4/8/16/32 experts (top-2) at equal active parameters and "
    "tokens, over seeds: held-out loss claims with intervals, step time ratio, params",
    config=config,
    run=run,
)
