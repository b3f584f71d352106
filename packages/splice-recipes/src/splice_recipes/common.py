"""Pieces several recipes share: the small decoder, the addition task, short-run trainer
settings, and one sub-run of a pre-train / fine-tune study.

Torch-free: building a recipe's default config stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splice.training.configs import (
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)


def tiny_decoder(vocab_size: int, *, max_seq_len: int = 16) -> dict[str, Any]:
    """The recipes' small model: a 2-layer, d=64 pre-norm decoder with 4-head splice-mha
    attention (RoPE), as a model config dict."""
    return {
        "type": "decoder",
        "vocab_size": vocab_size,
        "d_model": 64,
        "n_layers": 2,
        "max_seq_len": max_seq_len,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
    }


def addition_task(op: str = "+", **extra: Any) -> dict[str, Any]:
    """1-2 digit arithmetic (``37+25=`` -> ``26``), answer digits least-significant first;
    ``extra`` adds or replaces task fields (e.g. ``separator``, ``answer_digits``)."""
    return {"type": "arithmetic", "op": op, "min_digits": 1, "max_digits": 2,
            "reverse_answer": True, **extra}  # fmt: skip


def short_run(
    *,
    steps: int,
    batch_size: int,
    lr: float,
    log_every: int,
    schedule: ScheduleConfig | None = None,
    betas: tuple[float, float] = (0.9, 0.98),
    **extra: Any,
) -> TrainConfig:
    """Trainer settings of a recipe's sub-run: one kept checkpoint and one thread (the tiny
    matmuls gain nothing from a second), AdamW at ``lr``; ``extra`` sets other fields."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        log_every=log_every,
        keep_last=1,
        num_threads=1,
        optimizer=OptimizerConfig(lr=lr, betas=betas),
        **({"schedule": schedule} if schedule is not None else {}),
        **extra,
    )


def two_task_experiment(
    config: Any, name: str, *, task: Any, others: dict[str, Any], train: TrainConfig,
    split: str = "held_out", every: int | None = None, **extra: Any,
) -> ExperimentConfig:  # fmt: skip
    """One sub-run of a pre-train / fine-tune study: train on ``task``, score it and each of
    ``others`` by greedy exact match (no held-out loss) on ``split`` (``"dev"`` to choose
    hyperparameters), every ``every`` steps and at the end, in ``<run dir>/<name>``.

    ``config`` is the recipe's: its ``name``, ``seed`` (0 where it has none: a study pins
    each run's seed), ``model``, ``max_len``, ``eval_examples``, ``max_new_tokens`` and
    ``run_dir()`` are used; ``extra`` goes to ``ExperimentConfig`` (``init_from``,
    ``adapter``, ``regularizers``, ...).
    """
    return ExperimentConfig(
        name=f"{config.name}-{name}",
        seed=getattr(config, "seed", 0),
        model=config.model,
        data=DataConfig(task=task, max_len=config.max_len),
        train=train,
        eval=EvalConfig(
            every=every,
            split=split,
            loss_batches=0,
            exact_match_examples=config.eval_examples,
            max_new_tokens=config.max_new_tokens,
            tasks=others,
        ),
        output_dir=str(Path(config.run_dir()) / name),
        **extra,
    )
