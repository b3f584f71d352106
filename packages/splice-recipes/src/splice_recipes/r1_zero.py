"""Recipe ``r1-zero``: DeepSeek-R1's recipe in miniature, on CPU in minutes.

A small decoder learns column addition with a chain of thought in R1's format
(``37+25=`` -> ``<think>7+5=12,3+2+1=6</think><answer>62</answer>``):

1. **SFT, deliberately brief**: a few hundred steps on a mixture of the chain-of-thought
   addition task and a second skill (subtraction answered directly, ``37-25=`` -> ``12``),
   stopped while addition is still often wrong, so there is room to improve;
2. **GRPO** from the SFT weights with rule-based rewards only (answer match + format), on
   addition prompts alone, once per KL weight in ``betas`` (β = 0 and β > 0).

It prints held-out addition accuracy and format rate after SFT and after GRPO, the mean
completion length over training (R1's "reasoning time increases" claim, shown or not),
and subtraction accuracy (the second skill, never trained by GRPO) before and after each
GRPO arm (R1's claim that the KL term guards against forgetting, shown or not); writes
``r1_zero.md`` (the table), ``r1_zero.json`` and ``r1_zero.png`` (reward, accuracy and
length curves).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from splice.config import ModelField, SpliceConfig
from splice.data.tokenizer import DEFAULT_ALPHABET
from splice.recipe import Recipe
from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    RolloutConfig,
    ScheduleConfig,
    TokenizerConfig,
    TrainConfig,
)

from splice_recipes.common import save_config, save_report, save_table, short_run, tiny_decoder

ALPHABET = DEFAULT_ALPHABET + "<>"  # R1's tags
VOCAB = 3 + len(ALPHABET)
ADDITION = {
    "type": "arithmetic",
    "op": "+",
    "min_digits": 1,
    "max_digits": 2,
    "chain_of_thought": True,
}
SUBTRACTION = {"type": "arithmetic", "op": "-", "min_digits": 1, "max_digits": 1}
REWARDS = [
    {"reward": {"type": "answer_match"}, "weight": 1.0, "name": "accuracy"},
    {"reward": {"type": "format"}, "weight": 0.5, "name": "format"},
]


def _default_sft() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=30, min_lr_ratio=0.1)
    return short_run(steps=400, batch_size=32, lr=3e-3, log_every=25, schedule=schedule)


def _default_grpo() -> TrainConfig:
    # RL steps are small: Adam's first update moves every weight by ~lr whatever the
    # gradient's size, and at 5e-4 one such step broke this model (accuracy 30% -> 5%).
    # batch_size is unused by online runs: rollout.prompts_per_step sets the batch.
    return short_run(steps=80, batch_size=1, lr=5e-5, log_every=5, betas=(0.9, 0.99),
                     max_grad_norm=1.0)  # fmt: skip


class R1ZeroConfig(SpliceConfig):
    """SFT briefly, then GRPO once per ``betas`` value.

    Attributes:
        sft_task: what SFT trains on (addition with chain of thought + the second skill).
        grpo_task / retention_task: GRPO's prompts, and the second skill it never sees.
        grpo_objective: the GRPO config (``beta`` is replaced by each value of ``betas``).
        eval_examples: held-out problems per task, answered greedily.
        eval_every: GRPO steps between evaluations (the accuracy curve).
    """

    name: str = "r1-zero"
    seed: int = 0
    model: ModelField = Field(
        default_factory=lambda: tiny_decoder(VOCAB, max_seq_len=64), validate_default=True
    )  # type: ignore[valid-type]
    tokenizer: TokenizerConfig = TokenizerConfig(alphabet=ALPHABET)
    sft_task: dict[str, Any] = Field(
        default_factory=lambda: {
            "type": "mixture",
            "tasks": [ADDITION, SUBTRACTION],
            "weights": [2, 1],
        }
    )
    grpo_task: dict[str, Any] = Field(default_factory=lambda: dict(ADDITION))
    retention_task: dict[str, Any] = Field(default_factory=lambda: dict(SUBTRACTION))
    max_len: PositiveInt = 64
    sft: TrainConfig = Field(default_factory=_default_sft)
    grpo: TrainConfig = Field(default_factory=_default_grpo)
    # temperature 0.5: at 1.0 the briefly trained model's samples are almost never right
    # (8% against 64% greedy), which leaves GRPO groups without a correct member to learn from
    rollout: RolloutConfig = RolloutConfig(prompts_per_step=16, max_new_tokens=56, temperature=0.5)
    grpo_objective: dict[str, Any] = Field(
        default_factory=lambda: {"type": "grpo", "group_size": 8, "rewards": REWARDS}
    )
    betas: list[NonNegativeFloat] = Field(default_factory=lambda: [0.04, 0.0], min_length=1)
    eval_examples: NonNegativeInt = 200
    eval_every: PositiveInt = 20
    output_dir: str | None = None

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def _eval(config: R1ZeroConfig, *, every: int | None, tasks: dict[str, Any]) -> EvalConfig:
    return EvalConfig(
        every=every,
        loss_batches=0,
        exact_match_examples=config.eval_examples,
        max_new_tokens=config.rollout.max_new_tokens,
        batch_size=200,
        tasks=tasks,
        rewards=REWARDS,
    )


def sft_config(config: R1ZeroConfig) -> ExperimentConfig:
    return ExperimentConfig(
        name=f"{config.name}-sft",
        seed=config.seed,
        model=config.model,
        tokenizer=config.tokenizer,
        data=DataConfig(task=config.sft_task, max_len=config.max_len),
        train=config.sft,
        eval=_eval(
            config, every=None, tasks={"add": config.grpo_task, "sub": config.retention_task}
        ),
        output_dir=str(Path(config.run_dir()) / "sft"),
    )


def grpo_config(config: R1ZeroConfig, beta: float, init_from: str) -> ExperimentConfig:
    return ExperimentConfig(
        name=f"{config.name}-grpo-beta{beta:g}",
        seed=config.seed,
        model=config.model,
        tokenizer=config.tokenizer,
        data=DataConfig(task=config.grpo_task, max_len=config.max_len),
        objective={**config.grpo_objective, "beta": beta},
        train=config.grpo,
        rollout=config.rollout,
        eval=_eval(config, every=config.eval_every, tasks={"sub": config.retention_task}),
        init_from=init_from,
        output_dir=str(Path(config.run_dir()) / f"grpo-beta{beta:g}"),
    )


def _scores(ev: dict[str, Any], add: str) -> dict[str, float]:
    """Addition accuracy / format / length under the prefix ``add``, the 2nd skill's accuracy."""
    return {
        "acc": float(ev[f"{add}reward/accuracy"]),
        "format": float(ev[f"{add}reward/format"]),
        "sub": float(ev["sub/reward/accuracy"]),
        "length": float(ev[f"{add}completion_length"]),
    }


def _train_records(run_dir: Path) -> list[dict[str, Any]]:
    from splice.training.metrics import read_metrics

    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "train"]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One row per method: held-out addition accuracy before/after, format rate, the second
    skill's accuracy (retention), completion length at the start and end of training."""
    head = (
        "| method | acc before | acc after | Δ | train time (s) | format before | format after "
        "| 2nd skill before | 2nd skill after | length first → last |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        b, a = r["before"], r["after"]
        length = f"{r['length_first']:.1f} → {r['length_last']:.1f}" if "length_first" in r else "–"
        lines.append(
            f"| {r['method']} | {b['acc']:.1%} | {a['acc']:.1%} | {100 * (a['acc'] - b['acc']):+.1f} "
            f"| {r['train_time_s']:.0f} | {b['format']:.1%} | {a['format']:.1%} "
            f"| {b['sub']:.1%} | {a['sub']:.1%} | {length} |"
        )
    return "\n".join(lines)


def plot(runs: dict[str, Path], png: Path) -> Path:
    """Reward, held-out accuracy and completion length against the GRPO step, per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from splice.training.metrics import read_metrics

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, run in runs.items():
        recs = read_metrics(run / "metrics.jsonl")
        train = [r for r in recs if r.get("kind") == "train"]
        evals = [r for r in recs if r.get("kind") == "eval"]
        axes[0].plot([r["step"] for r in train], [r["reward"] for r in train], label=label)
        axes[1].plot(
            [r["step"] for r in evals], [r["reward/accuracy"] for r in evals], "o-", label=label
        )
        axes[2].plot(
            [r["step"] for r in train], [r["completion_length"] for r in train], label=label
        )
    for ax, title in zip(
        axes, ("mean reward (rollouts)", "held-out accuracy", "completion length (tokens)")
    ):
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def run(config: R1ZeroConfig) -> dict[str, Any]:
    """SFT, then one GRPO run per β; prints and saves the table and the plot."""
    import time

    from splice.training.experiment import run_experiment

    start = time.perf_counter()
    root = Path(config.run_dir())
    save_config(root, config)

    sft_exp = sft_config(config)
    sft = run_experiment(sft_exp)
    after_sft = _scores(sft["eval"], "add/")
    print(
        f"after SFT ({sft['train_time_s']:.0f} s): accuracy {after_sft['acc']:.1%}, format "
        f"{after_sft['format']:.1%}, 2nd skill {after_sft['sub']:.1%}",
        flush=True,
    )
    rows: list[dict[str, Any]] = [
        {
            "method": f"SFT ({config.sft.steps} steps)",
            "before": {"acc": 0.0, "format": 0.0, "sub": 0.0},
            "after": after_sft,
            "train_time_s": float(sft["train_time_s"]),
        }
    ]
    runs: dict[str, Path] = {}
    for beta in config.betas:
        exp = grpo_config(config, beta, init_from=sft_exp.run_dir())
        rep = run_experiment(exp)
        after = _scores(rep["eval"], "")
        train = _train_records(Path(exp.run_dir()))
        k = max(1, len(train) // 10)  # first / last tenth of training
        lengths = [r["completion_length"] for r in train]
        rows.append(
            {
                "method": f"GRPO β={beta:g} ({config.grpo.steps} steps)",
                "before": after_sft,
                "after": after,
                "train_time_s": float(rep["train_time_s"]),
                "length_first": sum(lengths[:k]) / k,
                "length_last": sum(lengths[-k:]) / k,
                "rollout_s": sum(r["rollout_s"] for r in train),
                "update_s": sum(r["update_s"] for r in train),
            }
        )
        runs[f"β={beta:g}"] = Path(exp.run_dir())
        print(
            f"GRPO β={beta:g} ({rep['train_time_s']:.0f} s): accuracy {after_sft['acc']:.1%} -> "
            f"{after['acc']:.1%}, format {after['format']:.1%}, 2nd skill {after_sft['sub']:.1%} "
            f"-> {after['sub']:.1%}, length {rows[-1]['length_first']:.1f} -> "
            f"{rows[-1]['length_last']:.1f}",
            flush=True,
        )
    table = markdown_table(rows)
    save_table(root, "r1_zero", table)
    png = plot(runs, root / "r1_zero.png")
    wall = time.perf_counter() - start
    print(table)
    print(f"wall time: {wall:.0f} s; plot: {png}")
    report = {"name": config.name, "run_dir": str(root), "rows": rows, "wall_time_s": wall}
    save_report(root, "r1_zero", report)
    return report


def config() -> R1ZeroConfig:
    return R1ZeroConfig()


recipe = Recipe(
    name="r1-zero",
    description="brief SFT on chain-of-thought addition, then GRPO with rule-based rewards "
    "(β=0 vs β>0): accuracy, format, length, retention of a second skill",
    config=config,
    run=run,
)
