"""Recipe ``addition``: one training run of a small dense decoder learning addition from
scratch (the ``arithmetic`` study runs it over arms and seeds).

The standard trainer runs it, so it resumes and runs under torchrun. A 2-layer, d=128 decoder
(splice-mha attention, RoPE, pre-norm) is trained with SFT on the built-in
arithmetic task: ``a+b=`` with 1-2 digit operands, the answer written
least-significant digit first (``37+25=`` -> ``26``), the order in which carries
are computed, which a left-to-right decoder learns much faster. Held-out problems
(a hash-based 10% of all operand pairs, never trained on, each scored once) are
answered greedily and scored by exact match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from splice.recipe import Recipe
from splice.training.configs import ExperimentConfig


def config() -> ExperimentConfig:
    """The default run: about 1200 optimizer steps of 64 problems."""
    return ExperimentConfig(
        name="addition",
        seed=0,
        model={
            "type": "decoder",
            "vocab_size": 52,
            "d_model": 128,
            "n_layers": 2,
            "max_seq_len": 16,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 4},
                "channel_mixer": {"type": "mlp", "multiple": 4.0},
            },
        },
        data={
            "task": {
                "type": "arithmetic",
                "op": "+",
                "min_digits": 1,
                "max_digits": 2,
                "reverse_answer": True,
            },
            "max_len": 16,
        },
        train={
            "steps": 1200,
            "batch_size": 64,
            "log_every": 50,
            "checkpoint_every": 400,
            "keep_last": 1,
            "num_threads": 1,
            "optimizer": {"lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.98]},
            "schedule": {"kind": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.05},
        },
        eval={"every": 300, "loss_batches": 4, "exact_match_examples": 500, "max_new_tokens": 6},
    )


def run(
    config: ExperimentConfig,
    *,
    resume: bool | Literal["auto"] = False,
    overwrite: bool = False,
    allow_config_change: Sequence[str] = (),
) -> dict[str, Any]:
    """Train and evaluate; print the held-out exact-match accuracy (of the last evaluation).

    ``resume``, ``overwrite`` and ``allow_config_change`` are ``run_experiment``'s."""
    from splice.training.experiment import build_task, run_experiment

    report = run_experiment(
        config, resume=resume, overwrite=overwrite, allow_config_change=allow_config_change
    )
    acc = report["eval"].get("exact_match")
    if acc is not None:
        n = len(build_task(config.data.task).sample("held_out", config.eval.exact_match_examples))
        print(
            f"held-out exact-match accuracy: {acc:.1%} of {n} unseen problems "
            f"({report['train_time_s']:.0f} s of training)"
        )
    return report


recipe = Recipe(
    name="addition",
    description="one run: a 2-layer decoder learns 1-2 digit addition; prints held-out exact match",
    config=config,
    run=run,
)
