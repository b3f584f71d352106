"""Recipe ``moe-vs-dense``: does a mixture of experts add capacity without adding compute?

Dense and MoE decoders with the same *active* parameters per token (the FFN work one
token does) are trained from scratch on the same built-in task (1-2 digit
multiplication, a lookup-heavy task where capacity should help) for the same steps:

* ``dense``: SwiGLU of width ``3h``;
* ``moe8``: 8 SwiGLU experts of width ``h``, top-2, plus 1 shared expert (``3h`` active);
* ``fine32``: 32 fine-grained experts of width ``3h/4``, top-4 (``3h`` active);

each MoE with no balancing, the Switch auxiliary loss, or DeepSeek-V3's
auxiliary-loss-free bias. The table reports held-out loss and exact-match accuracy,
total vs active parameters, the time per step, and the expert load balance
(max/mean load, averaged over the MoE layers and the last fifth of training).
``loss_curves.png`` overlays the training losses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from splice.config import ChannelMixerField, SpliceConfig, TaskField
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

from splice_recipes.common import save_config, save_report, save_table

VOCAB = 52  # pad/bos/eos + the default character alphabet


class ArmConfig(SpliceConfig):
    """One model of the comparison: its FFN (channel mixer) on every layer."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    channel_mixer: ChannelMixerField  # type: ignore[valid-type]


def default_arms(h: int = 64) -> list[ArmConfig]:
    """Dense vs MoE arms at equal active FFN width ``3h`` (see the module docstring)."""
    moe8 = {"type": "moe", "n_experts": 8, "top_k": 2, "n_shared": 1, "expert_hidden": h}
    fine = {"type": "moe", "n_experts": 32, "top_k": 4, "expert_hidden": 3 * h // 4}
    balancing = {
        "none": {},
        "aux": {"aux_loss_weight": 0.01},
        "auxfree": {"bias_update_rate": 0.001},
    }
    arms = [ArmConfig(name="dense", channel_mixer={"type": "swiglu", "hidden_dim": 3 * h})]
    for label, base in (("moe8", moe8), ("fine32", fine)):
        for how, extra in balancing.items():
            arms.append(ArmConfig(name=f"{label}-{how}", channel_mixer={**base, **extra}))
    return arms


def _default_train() -> TrainConfig:
    return TrainConfig(
        steps=300,
        batch_size=64,
        log_every=20,
        keep_last=1,
        num_threads=1,  # tiny matmuls: a second thread costs more in sync than it gains
        optimizer=OptimizerConfig(lr=3e-3, betas=(0.9, 0.98), weight_decay=0.1),
        schedule=ScheduleConfig(kind="cosine", warmup_steps=30, min_lr_ratio=0.05),
    )


class MoEVsDenseConfig(SpliceConfig):
    """Train every arm with the same decoder, data, steps and seed.

    Attributes:
        d_model / n_layers / n_heads: the decoder shared by all arms (pre-norm, RMSNorm, RoPE).
        task: the built-in task trained and evaluated on.
        arms: the FFNs compared, one table row each (on every layer).
        eval_examples: held-out problems scored by greedy exact match.
        loss_batches: held-out batches for the held-out loss.
        output_dir: run folder; one sub-folder per arm.
    """

    name: str = "moe-vs-dense"
    seed: int = 0
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
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
    arms: list[ArmConfig] = Field(default_factory=default_arms)
    eval_examples: NonNegativeInt = 500
    loss_batches: NonNegativeInt = 8
    max_new_tokens: PositiveInt = 6
    output_dir: str | None = None

    @model_validator(mode="after")
    def _unique_arms(self) -> MoEVsDenseConfig:
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arms: names must be unique, {dupes} repeat")
        return self

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def arm_experiment(config: MoEVsDenseConfig, arm: ArmConfig) -> ExperimentConfig:
    """The ``ExperimentConfig`` of one arm."""
    return ExperimentConfig(
        name=f"{config.name}-{arm.name}",
        seed=config.seed,
        model={
            "type": "decoder",
            "vocab_size": VOCAB,
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "max_seq_len": config.max_len,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": config.n_heads},
                "channel_mixer": arm.channel_mixer,
                "norm": {"type": "rmsnorm"},
            },
            "final_norm": {"type": "rmsnorm"},
        },
        data=DataConfig(task=config.task, max_len=config.max_len),
        train=config.train,
        eval=EvalConfig(
            loss_batches=config.loss_batches,
            exact_match_examples=config.eval_examples,
            max_new_tokens=config.max_new_tokens,
        ),
        output_dir=str(Path(config.run_dir()) / arm.name),
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


def train_losses(metrics_path: Path) -> tuple[list[int], list[float]]:
    records = [json.loads(s) for s in metrics_path.read_text().splitlines() if s.strip()]
    train = [r for r in records if r.get("kind") == "train" and "loss" in r]
    return [r["step"] for r in train], [r.get("ce_loss", r["loss"]) for r in train]


def plot(curves: dict[str, tuple[list[int], list[float]]], path: Path) -> Path:
    """Training cross-entropy of every arm (EMA-smoothed), one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (steps, losses) in curves.items():
        smooth, ema = [], None
        for x in losses:
            ema = x if ema is None else 0.9 * ema + 0.1 * x
            smooth.append(ema)
        ax.plot(steps, smooth, lw=1.2, ls="-" if name == "dense" else "--", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training cross-entropy (EMA 0.9)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    head = (
        "| arm | held-out loss | held-out accuracy | total params | active params/token "
        "| ms/step | step time vs dense | load max/mean |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    dense = rows.get("dense", {}).get("ms_per_step")
    lines = [head]
    for name, r in rows.items():
        ratio = f"{r['ms_per_step'] / dense:.2f}x" if dense else "-"
        lb = f"{r['load_max_mean']:.2f}" if r["load_max_mean"] is not None else "-"
        lines.append(
            f"| {name} | {r['eval_loss']:.4f} | {r['accuracy']:.1%} | {r['total_params']:,} "
            f"| {r['active_params']:,} | {r['ms_per_step']:.1f} | {ratio} | {lb} |"
        )
    return "\n".join(lines)


def run(config: MoEVsDenseConfig) -> dict[str, Any]:
    """Train each arm, print and save the table and ``loss_curves.png``; returns the rows."""
    from splice.training.experiment import run_experiment

    run_dir = Path(config.run_dir())
    save_config(run_dir, config)
    rows: dict[str, dict[str, Any]] = {}
    curves = {}
    for arm in config.arms:
        exp = arm_experiment(config, arm)
        rep = run_experiment(exp)
        total, active = parameter_counts(exp)
        metrics = Path(exp.run_dir()) / "metrics.jsonl"
        rows[arm.name] = {
            "eval_loss": float(rep["eval"].get("eval_loss", float("nan"))),
            "accuracy": float(rep["eval"].get("exact_match", float("nan"))),
            "total_params": total,
            "active_params": active,
            "ms_per_step": 1000 * float(rep["train_time_s"]) / int(rep["steps"]),
            "load_max_mean": load_balance(metrics),
            "final_train_loss": float(rep["final_train_loss"]),
        }
        curves[arm.name] = train_losses(metrics)
        r = rows[arm.name]
        print(
            f"{arm.name}: held-out loss {r['eval_loss']:.4f}, accuracy {r['accuracy']:.1%}, "
            f"{r['ms_per_step']:.1f} ms/step",
            flush=True,
        )
    table = markdown_table(rows)
    png = plot(curves, run_dir / "loss_curves.png")
    save_table(run_dir, "moe-vs-dense", table)
    print(table)
    print(f"loss curves: {png}")
    report = {"name": config.name, "run_dir": str(run_dir), "rows": rows, "plot": str(png)}
    save_report(run_dir, "moe-vs-dense", report)
    return report


def config() -> MoEVsDenseConfig:
    return MoEVsDenseConfig()


recipe = Recipe(
    name="moe-vs-dense",
    description="dense vs MoE (8 experts top-2 + shared; 32 fine-grained top-4) at equal "
    "active parameters, with no balancing / aux loss / aux-loss-free: loss, accuracy, "
    "params, step time, load balance",
    config=config,
    run=run,
)
