"""Evaluate a trained run or checkpoint folder: rebuild model, tokenizer and task from its config.

A run folder (``splice run``) holds ``config.json`` (an ``ExperimentConfig``) and
``checkpoints/step-*/`` (each with ``model.safetensors`` and a copy of the config).
The held-out sets are drawn with the same seeds as the in-training evaluator, so
``splice eval`` reproduces the final in-training figures of a run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from splice.evaluation.evaluator import Evaluator
from splice.generation.sampling import SamplingConfig


def find_config(run_dir: Path | None, checkpoint: Path | None) -> Path:
    """The experiment ``config.json`` of a checkpoint (its own, or its run's) or of a run."""
    candidates = []
    if checkpoint is not None and checkpoint.is_dir():
        candidates += [checkpoint / "config.json", checkpoint.parent.parent / "config.json"]
    if run_dir is not None:
        candidates.append(run_dir / "config.json")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no experiment config.json found (looked at {[str(c) for c in candidates]}); pass --config"
    )


def evaluate_run(
    *,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    config_path: str | Path | None = None,
    task: Mapping[str, Any] | None = None,
    examples: int | None = None,
    loss_batches: int | None = None,
    pass_samples: int = 0,
    ks: Sequence[int] = (1,),
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate the weights of ``checkpoint`` (default: the run's latest) on a held-out split.

    Args:
        run_dir: a ``splice run`` output folder.
        checkpoint: a checkpoint folder or ``model.safetensors`` file.
        config_path: the experiment config, when it is not next to the weights.
        task: a task config (``{"type": "arithmetic", "op": "-"}``) to evaluate instead of
            the run's training task (e.g. an old task, to measure forgetting).
        examples / loss_batches / max_new_tokens / batch_size: override ``config.eval``.
        pass_samples: samples per problem for pass@k (0: skip pass@k).
        ks / temperature: pass@k's ``k`` values and sampling temperature.

    Returns:
        metrics plus ``run_dir``, ``weights`` and ``task`` describing what was evaluated.
    """
    from pydantic import TypeAdapter

    from splice.checkpoint import load_model_weights
    from splice.config import TaskField
    from splice.models.build import build_model
    from splice.registry import get_registry
    from splice.training.config import ExperimentConfig
    from splice.training.experiment import build_collator, build_task, build_tokenizer
    from splice.training.stream import derive_seed

    if run_dir is None and checkpoint is None:
        raise ValueError("give a run folder (--run) or a checkpoint (--checkpoint)")
    run = Path(run_dir) if run_dir is not None else None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    cfg_path = Path(config_path) if config_path is not None else find_config(run, ckpt)
    config = ExperimentConfig.model_validate(json.loads(cfg_path.read_text()))
    ev, seed = config.eval, config.seed

    tokenizer = build_tokenizer(config.tokenizer)
    task_cfg = config.data.task
    if task is not None:  # validated like a config field, so a bad task names its field
        task_cfg = TypeAdapter(TaskField).validate_python(dict(task))
    task_obj = build_task(task_cfg)
    model = build_model(config.model)
    weights = ckpt if ckpt is not None else run
    assert weights is not None
    load_model_weights(model, weights)
    model.eval()

    n_examples = ev.exact_match_examples if examples is None else examples
    n_loss = ev.loss_batches if loss_batches is None else loss_batches
    collate = build_collator(tokenizer, config.data)
    batches = [
        collate(
            task_obj.sample("held_out", config.train.batch_size, seed=derive_seed(seed, "eval", i))
        )
        for i in range(n_loss)
    ]
    new_tokens = max_new_tokens or ev.max_new_tokens
    held_out = task_obj.sample("held_out", n_examples, seed=derive_seed(seed, "em"))
    evaluator = Evaluator(
        tokenizer,
        objective=get_registry().build("objective", config.objective, None) if batches else None,
        loss_batches=batches,
        exact_match_examples=held_out,
        pass_at_k_examples=held_out if pass_samples else (),
        sampling=SamplingConfig(max_new_tokens=new_tokens),
        pass_sampling=SamplingConfig(
            max_new_tokens=new_tokens, temperature=temperature, n=max(pass_samples, 1), seed=seed
        ),
        ks=ks,
        batch_size=batch_size or ev.batch_size,
    )
    metrics = evaluator(model)
    return {
        **metrics,
        "exact_match_examples": len(held_out),
        "loss_batches": len(batches),
        **({"pass_samples": pass_samples} if pass_samples else {}),
        "run_dir": str(run) if run is not None else None,
        "weights": str(weights),
        "task": task_cfg.model_dump(mode="json"),
    }


__all__ = ["evaluate_run", "find_config"]
