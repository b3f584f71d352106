"""Recipe ``lora-rank``: does a low-rank delta suffice, and what does a larger rank cost?

The seed's claim: the update fine-tuning makes to a pre-trained model is low-rank, so a
LoRA delta ``B A`` of small rank ``r`` learns the new task about as well as updating every
weight, and a larger ``r`` captures more directions but trains slower. Tested here: a small
decoder is pre-trained on task A (addition), then fine-tuned on the related task B
(subtraction, same digits and answer format) once per rank ``r`` in ``ranks`` (LoRA on
every linear layer, base frozen) and once with full fine-tuning. Each row reports held-out
exact match on B (and on A, what is kept), trainable parameters, and the time per step.

The LoRA scale is held fixed across ranks (``alpha = alpha_over_r * r``, so ``alpha / r`` is
constant): with a fixed ``alpha`` a larger rank would also be a smaller step, which mixes
two effects. LoRA and full fine-tuning get their own learning rates (LoRA's usual rate is
higher: B starts at zero and only a few parameters move).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from splice.config import ModelField, SpliceConfig, TaskField
from splice.recipe import Recipe
from splice.training.configs import ExperimentConfig, ScheduleConfig, TrainConfig

from splice_recipes.common import (
    addition_task,
    save_config,
    save_report,
    save_table,
    short_run,
    tiny_decoder,
    two_task_experiment,
)

VOCAB = 52  # pad/bos/eos + the default character alphabet


def _default_pretrain() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=100, min_lr_ratio=0.05)
    return short_run(steps=1500, batch_size=64, lr=3e-3, log_every=50, schedule=schedule)


def _default_finetune() -> TrainConfig:
    schedule = ScheduleConfig(kind="cosine", warmup_steps=20, min_lr_ratio=0.1)
    return short_run(steps=500, batch_size=64, lr=1e-3, log_every=50, schedule=schedule)


class LoRARankConfig(SpliceConfig):
    """Pre-train on ``old_task``; fine-tune on ``new_task`` with LoRA at each rank, and fully.

    Attributes:
        ranks: the LoRA ranks swept (one row each).
        targets: LoRA targets (``splice-lora``'s syntax), the same for every rank.
        alpha_over_r: ``alpha = alpha_over_r * r``: the same scale ``alpha / r`` at every rank.
        lora_lr / full_lr: peak learning rates of the LoRA rows and of full fine-tuning.
        full_finetune: add the full fine-tuning row.
    """

    name: str = "lora-rank"
    seed: int = 0
    model: ModelField = Field(default_factory=lambda: tiny_decoder(VOCAB), validate_default=True)  # type: ignore[valid-type]
    old_task: TaskField = Field(default_factory=lambda: addition_task("+"), validate_default=True)  # type: ignore[valid-type]
    new_task: TaskField = Field(default_factory=lambda: addition_task("-"), validate_default=True)  # type: ignore[valid-type]
    max_len: PositiveInt = 16
    pretrain: TrainConfig = Field(default_factory=_default_pretrain)
    finetune: TrainConfig = Field(default_factory=_default_finetune)
    ranks: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 64])
    targets: str = "all-linear"
    alpha_over_r: PositiveFloat = 2.0
    lora_lr: PositiveFloat = 3e-3
    full_lr: PositiveFloat = 1e-3
    full_finetune: bool = True
    eval_examples: NonNegativeInt = 300
    max_new_tokens: PositiveInt = 5
    output_dir: str | None = None

    @field_validator("ranks")
    @classmethod
    def _distinct(cls, ranks: list[int]) -> list[int]:
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"ranks: each rank once, got {ranks}")
        return ranks

    def run_dir(self) -> str:
        return self.output_dir or f"runs/{self.name}"


def pretrain_config(config: LoRARankConfig) -> ExperimentConfig:
    """Task A from scratch (task B scored too: the starting point of every row)."""
    return two_task_experiment(config, "pretrain", task=config.old_task,
                               others={"new": config.new_task}, train=config.pretrain)  # fmt: skip


def finetune_config(config: LoRARankConfig, rank: int | None, init_from: str) -> ExperimentConfig:
    """Task B from the pre-trained weights: LoRA of rank ``rank``, or full fine-tuning (None)."""
    lr = config.full_lr if rank is None else config.lora_lr
    train = config.finetune.model_copy(
        update={"optimizer": config.finetune.optimizer.model_copy(update={"lr": lr})}
    )
    adapter = None
    if rank is not None:
        adapter = {"type": "lora", "r": rank, "alpha": config.alpha_over_r * rank,
                   "targets": config.targets}  # fmt: skip
    name = "full" if rank is None else f"r{rank}"
    return two_task_experiment(config, name, task=config.new_task,
                               others={"old": config.old_task}, train=train,
                               init_from=init_from, adapter=adapter)  # fmt: skip


def paired_step_times(
    config: LoRARankConfig, init_from: str, *, rounds: int = 12, warmup: int = 2
) -> dict[str, float]:
    """Median milliseconds of one training step per row, timed side by side.

    A run's own ``train_time_s`` depends on what else the machine ran meanwhile (rows run
    minutes apart). Here every row's model (pre-trained weights + its adapter, or none) takes
    one ``Trainer.train_step`` in turn, on the same batch, round after round (the order
    rotating), so load drifts hit every row alike; ``warmup`` rounds are dropped.
    """
    import statistics
    import time

    import torch
    from splice.objectives.sft import SFTObjective
    from splice.training.experiment import (
        build_collator,
        build_experiment_model,
        build_task,
        build_tokenizer,
    )
    from splice.training.trainer import Trainer, seed_everything

    arms: list[int | None] = [*config.ranks, *([None] if config.full_finetune else [])]
    exp0 = finetune_config(config, None, init_from)
    collate = build_collator(build_tokenizer(exp0.tokenizer), exp0.data)
    batch = collate(build_task(config.new_task).sample("train", config.finetune.batch_size, seed=1))
    steppers: dict[str, Any] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(config.finetune.num_threads or threads)
    try:
        for rank in arms:
            exp = finetune_config(config, rank, init_from)
            seed_everything(config.seed)
            trainer = Trainer(build_experiment_model(exp), SFTObjective(), [batch], exp.train)
            trainer.model.train()
            steppers["full" if rank is None else f"r{rank}"] = trainer
        times: dict[str, list[float]] = {k: [] for k in steppers}
        names = list(steppers)
        for r in range(warmup + rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                steppers[name].train_step(iter([batch]))
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    """One row per rank (and full fine-tuning)."""
    lines = [
        "| run | trainable params | % of model | acc B (new task) | acc A kept "
        "| step ms (side by side) | step ms (in its run) | final train loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        paired = r.get("paired_step_ms")
        lines.append(
            f"| {name} | {r['trainable_params']:,} | {r['trainable_percent']:.2f}% "
            f"| {r['new_after']:.1%} | {r['old_after']:.1%} "
            f"| {'n/a' if paired is None else f'{paired:.1f}'} | {r['step_ms']:.1f} "
            f"| {r['final_train_loss']:.3f} |"
        )
    return "\n".join(lines)


def run(config: LoRARankConfig) -> dict[str, Any]:
    """Pre-train, fine-tune per rank and fully, print and save the table.

    Returns:
        ``{"name", "run_dir", "pretrain": {"old_accuracy", "new_accuracy"}, "rows": {...}}``;
        rows are keyed ``r1``, ``r2``, ..., ``full`` and hold ``rank``, ``trainable_params``,
        ``trainable_percent``, ``new_after``, ``old_after``, ``step_ms`` (the run's own
        average), ``paired_step_ms`` (``paired_step_times``), ``final_train_loss``.
    """
    from splice.training.experiment import run_experiment

    run_dir = Path(config.run_dir())
    save_config(run_dir, config)
    # Every run of the recipe redoes each stage: its sub-run folders are the recipe's own.
    pre = run_experiment(pretrain_config(config), overwrite=True)
    old_before, new_before = (
        float(pre["eval"]["exact_match"]),
        float(pre["eval"]["new/exact_match"]),
    )
    print(f"pre-trained on task A: A {old_before:.1%}, B {new_before:.1%}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    arms: list[int | None] = [*config.ranks, *([None] if config.full_finetune else [])]
    for rank in arms:
        exp = finetune_config(config, rank, init_from=str(run_dir / "pretrain"))
        rep = run_experiment(exp, overwrite=True)
        key = "full" if rank is None else f"r{rank}"
        rows[key] = {
            "rank": rank,
            "trainable_params": int(rep["trainable_params"]),
            "trainable_percent": float(rep["trainable_percent"]),
            "new_after": float(rep["eval"]["exact_match"]),
            "old_after": float(rep["eval"]["old/exact_match"]),
            "step_ms": 1e3 * float(rep["train_time_s"]) / max(int(rep["steps"]), 1),
            "final_train_loss": float(rep["final_train_loss"]),
        }
        r = rows[key]
        print(f"{key}: B {r['new_after']:.1%}, A kept {r['old_after']:.1%}, "
              f"{r['trainable_params']:,} params, {r['step_ms']:.1f} ms/step", flush=True)  # fmt: skip
    for key, ms in paired_step_times(config, str(run_dir / "pretrain")).items():
        rows[key]["paired_step_ms"] = ms
    table = markdown_table(rows)
    save_table(run_dir, "lora-rank", table)
    print(table)
    report = {
        "name": config.name,
        "run_dir": str(run_dir),
        "pretrain": {"old_accuracy": old_before, "new_accuracy": new_before},
        "rows": rows,
    }
    save_report(run_dir, "lora-rank", report)
    return report


def config() -> LoRARankConfig:
    return LoRARankConfig()


recipe = Recipe(
    name="lora-rank",
    description="pre-train on addition, fine-tune on subtraction with LoRA r=1..64 and fully: "
    "accuracy, trainable parameters and step time per rank",
    config=config,
    run=run,
)
