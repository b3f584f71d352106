"""Evaluate a trained run or checkpoint folder: rebuild model, tokenizer and task from its config.

A run folder (``splice run``) holds ``config.json`` (an ``ExperimentConfig``) and
``checkpoints/step-*/`` (each with ``model.safetensors`` and a copy of the config).
The held-out sets are drawn with the same seeds as the in-training evaluator, so
``splice eval`` reproduces the final in-training figures of a run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splice.evaluation.evaluator import Evaluator
from splice.generation.sampling import SamplingConfig
from splice.training.configs import EvalConfig


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


def is_splice_folder(path: str | Path) -> bool:
    """Whether ``path`` is a ``splice run`` folder or one of its checkpoints (not HF)."""
    path = Path(path)
    if (path / "manifest.json").is_file() or (path / "trainer_state.json").is_file():
        return True
    return (path / "checkpoints").is_dir() and (path / "config.json").is_file()


def load_splice_model(path: str | Path, *, trust_code: bool = False) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, ExperimentConfig)`` of a run folder (its newest intact
    checkpoint) or of one checkpoint folder, rebuilt from the run's ``config.json``.

    Code the config names is imported only from the allow-list unless ``trust_code``
    (``splice.rewards.callable.untrusted_configs``)."""
    from splice.rewards.callable import untrusted_configs

    with untrusted_configs(f"the config of {path}", trust_code=trust_code):
        return _load_splice_model(Path(path))


def _load_splice_model(path: Path) -> tuple[Any, Any, Any]:
    from splice.checkpoint import load_model_weights
    from splice.training.configs import ExperimentConfig
    from splice.training.experiment import build_experiment_model, build_tokenizer
    from splice.training.trainer import seed_everything

    is_checkpoint = not (path / "checkpoints").is_dir()
    cfg_path = find_config(None if is_checkpoint else path, path if is_checkpoint else None)
    config = ExperimentConfig.model_validate(json.loads(cfg_path.read_text()))
    seed_everything(config.seed)  # a run with an adapter rebuilds its frozen base
    model = build_experiment_model(config)
    load_model_weights(model, path)
    return model.eval(), build_tokenizer(config.tokenizer), config


@dataclass
class _Target:
    """What to evaluate and how: built from a run's config or from a Hugging Face folder."""

    model: Any
    tokenizer: Any
    task: Any
    collate: Any
    objective: Any
    eval: EvalConfig
    seed: int
    loss_batch_size: int
    weights: str


def _from_run(run: Path | None, ckpt: Path | None, config_path: Path | None, task: Any) -> _Target:
    from splice.checkpoint import load_model_weights
    from splice.registry import get_registry
    from splice.training.configs import ExperimentConfig
    from splice.training.experiment import (
        build_collator,
        build_experiment_model,
        build_tokenizer,
    )
    from splice.training.trainer import seed_everything

    cfg_path = config_path if config_path is not None else find_config(run, ckpt)
    config = ExperimentConfig.model_validate(json.loads(cfg_path.read_text()))
    seed_everything(config.seed)  # a run with an adapter rebuilds its frozen base
    model = build_experiment_model(config)
    weights = ckpt if ckpt is not None else run
    assert weights is not None
    load_model_weights(model, weights)
    tokenizer = build_tokenizer(config.tokenizer)
    return _Target(
        model=model,
        tokenizer=tokenizer,
        task=task if task is not None else config.data.task,
        collate=build_collator(tokenizer, config.data),
        objective=get_registry().build("objective", config.objective, None),
        eval=config.eval,
        seed=config.seed,
        loss_batch_size=config.train.batch_size,
        weights=str(weights),
    )


def _from_hf(folder: Path, task: Any, max_len: int) -> _Target:
    from splice.data.collate import SFTCollator
    from splice.hf import load_pretrained
    from splice.objectives.sft import SFTObjective

    if task is None:
        raise ValueError("--model needs --task: a Hugging Face folder names no task")
    model, tokenizer = load_pretrained(folder, dtype="float32")
    if tokenizer is None:
        raise ValueError(f"{folder}: no tokenizer.json; evaluation needs the model's tokenizer")
    return _Target(
        model=model,
        tokenizer=tokenizer,
        task=task,
        collate=SFTCollator(tokenizer, max_len=max_len),
        objective=SFTObjective(),
        eval=EvalConfig(),
        seed=0,
        loss_batch_size=8,
        weights=str(folder),
    )


def evaluate_run(
    *,
    run_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    model: str | Path | None = None,
    config_path: str | Path | None = None,
    task: Mapping[str, Any] | None = None,
    examples: int | None = None,
    loss_batches: int | None = None,
    pass_samples: int = 0,
    ks: Sequence[int] = (1,),
    temperature: float = 1.0,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    max_len: int = 256,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Evaluate a run's weights (default: its latest checkpoint) on a held-out split.

    Args:
        run_dir: a ``splice run`` output folder.
        checkpoint: a checkpoint folder or ``model.safetensors`` file of a run.
        model: instead of a run, a Hugging Face folder (``config.json``, safetensors,
            ``tokenizer.json``) read by ``splice.hf``; needs ``task``.
        config_path: the experiment config, when it is not next to the weights.
        task: a task config (``{"type": "arithmetic", "op": "-"}``) to evaluate instead of
            the run's training task (e.g. an old task, to measure forgetting).
        examples / loss_batches / max_new_tokens / batch_size: override ``config.eval``.
        pass_samples: samples per problem for pass@k (0: skip pass@k).
        ks / temperature: pass@k's ``k`` values and sampling temperature.
        max_len: longest held-out loss sequence for ``model`` (runs use their data config).
        trust_code: import code the run's config names (a ``callable`` reward) even when it
            is not allow-listed (``splice.rewards.callable.untrusted_configs``).

    Returns:
        metrics plus ``run_dir``, ``weights`` and ``task`` describing what was evaluated.
    """
    from pydantic import TypeAdapter

    from splice.config import TaskField
    from splice.training.experiment import build_task, loss_examples
    from splice.training.stream import derive_seed

    if sum(x is not None for x in (run_dir, checkpoint, model)) != 1:
        raise ValueError("give exactly one of a run folder, a checkpoint, or a model folder")
    task_cfg = None
    if task is not None:  # validated like a config field, so a bad task names its field
        task_cfg = TypeAdapter(TaskField).validate_python(dict(task))
    run = Path(run_dir) if run_dir is not None else None
    if model is not None:
        target = _from_hf(Path(model), task_cfg, max_len)
    else:
        ckpt = Path(checkpoint) if checkpoint is not None else None
        cfg = Path(config_path) if config_path is not None else None
        from splice.rewards.callable import untrusted_configs

        source = f"the config of {run if run is not None else ckpt}"
        with untrusted_configs(source, trust_code=trust_code):
            target = _from_run(run, ckpt, cfg, task_cfg)
    target.model.eval()
    ev, seed = target.eval, target.seed
    task_obj = build_task(target.task)

    n_examples = ev.exact_match_examples if examples is None else examples
    n_loss = ev.loss_batches if loss_batches is None else loss_batches
    batches = [
        target.collate(b)
        for b in loss_examples(task_obj, ev.split, n_loss, target.loss_batch_size, seed)
    ]
    new_tokens = max_new_tokens or ev.max_new_tokens
    held_out = task_obj.sample(ev.split, n_examples, seed=derive_seed(seed, "em"))
    evaluator = Evaluator(
        target.tokenizer,
        objective=target.objective if batches else None,
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
    metrics = evaluator(target.model)
    return {
        **metrics,
        "exact_match_examples": len(held_out),
        "loss_batches": len(batches),
        **({"pass_samples": pass_samples} if pass_samples else {}),
        "run_dir": str(run) if run is not None else None,
        "weights": target.weights,
        "task": target.task.model_dump(mode="json"),
    }


__all__ = ["evaluate_run", "find_config", "is_splice_folder", "load_splice_model"]
