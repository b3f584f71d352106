"""``run_experiment(config)``: build everything an ``ExperimentConfig`` names, train, evaluate.

config -> tokenizer, task, model (+ init weights, + adapter), objective, regularizers -> Trainer
-> run folder (``config.json``, ``metrics.jsonl``, ``checkpoints/``, ``curves.png``,
``report.md``) -> a report dict.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from splice.checkpoint import atomic_write_text, load_model_weights
from splice.data.examples import Example
from splice.data.tokenizer import CharTokenizer
from splice.interfaces import CollatingTask, EpochTask, Prepares
from splice.rl.rollout import PromptBatches, Rollouts
from splice.training.config_drift import check_resume_config
from splice.training.configs import DataConfig, ExperimentConfig, TokenizerConfig
from splice.training.online import is_online
from splice.training.run_folder import ResumeMode, checkpoint_entries, claim_run_folder
from splice.training.stream import BatchSource, ListBatches, TaskBatches, derive_seed
from splice.training.trainer import Trainer, seed_everything


def build_tokenizer(config: TokenizerConfig) -> Any:
    """The tokenizer a ``TokenizerConfig`` describes (``CharTokenizer`` or ``HFTokenizer``)."""
    if config.type == "hf":
        from splice.hf.tokenizer import HFTokenizer

        return HFTokenizer.from_pretrained(str(config.path))
    return CharTokenizer(config.alphabet)


def build_task(config: Any) -> Any:
    """The task object (``examples``/``sample``) of a registered task config."""
    from splice.registry import get_registry

    return get_registry().build("task", config, None)


@dataclass
class RunContext:
    """What ``objective.prepare(context)`` sees before training (e.g. to precompute
    reference log-probs once over the dataset and save them in ``run_dir``)."""

    model: nn.Module
    tokenizer: Any
    task: Any
    collate: Callable[[list[Any]], dict[str, Any]]
    run_dir: Path
    batch_size: int
    max_len: int
    resume: bool


def build_collator(
    tokenizer: Any, data: DataConfig, task: Any = None
) -> Callable[[list[Example]], dict[str, Any]]:
    """Batches of at most ``data.max_len`` tokens: the task's own collator when it has one
    (``task.collator(tokenizer, max_len=...)``, e.g. preference pairs), else padded (or
    packed) SFT batches."""
    from splice.data.collate import PackedSFTCollator, SFTCollator

    if isinstance(task, CollatingTask):
        return task.collator(tokenizer, max_len=data.max_len)

    cls = PackedSFTCollator if data.packing else SFTCollator
    return cls(tokenizer, max_len=data.max_len)


def loss_examples(
    task: Any, split: str, n_batches: int, batch_size: int, seed: int
) -> list[list[Example]]:
    """The held-out loss's batches: ``n_batches * batch_size`` examples of ``split`` drawn at
    once (distinct where the task samples evaluation splits without replacement), in batches;
    fewer when the split is smaller. ``splice eval`` draws the same ones."""
    if n_batches == 0:
        return []
    pool = task.sample(split, n_batches * batch_size, seed=derive_seed(seed, "eval"))
    return [pool[i : i + batch_size] for i in range(0, len(pool), batch_size)]


def build_evaluator(
    config: ExperimentConfig, tokenizer: Any, objective: Any, task: Any, *, with_loss: bool = True
) -> Any:
    """Held-out loss/perplexity and greedy exact match on the training task and ``eval.tasks``.

    ``with_loss=False`` skips the held-out loss (an online objective's loss needs rollouts).

    The held-out sets are drawn once with fixed seeds (``splice eval`` draws the same ones),
    so every evaluation of a run scores the same problems. Metric names: ``eval_loss``,
    ``eval_perplexity``, ``exact_match``; prefixed ``<name>/`` for ``eval.tasks``.
    """
    from splice.evaluation import Evaluator
    from splice.generation.sampling import SamplingConfig

    ev, seed = config.eval, config.seed
    rewards = None
    if ev.rewards:
        from splice.rewards import build_rewards

        rewards = build_rewards(ev.rewards)
    sampling = SamplingConfig(max_new_tokens=ev.max_new_tokens)
    parts = []
    for prefix, t in {"": task, **{f"{k}/": build_task(v) for k, v in ev.tasks.items()}}.items():
        collate = build_collator(tokenizer, config.data, t)
        n_loss = ev.loss_batches if with_loss else 0
        loss_batches = [
            collate(b) for b in loss_examples(t, ev.split, n_loss, config.train.batch_size, seed)
        ]
        em = t.sample(ev.split, ev.exact_match_examples, seed=derive_seed(seed, "em"))
        parts.append(
            Evaluator(
                tokenizer,
                objective=objective,
                loss_batches=loss_batches,
                exact_match_examples=em if ev.exact_match_examples else (),
                sampling=sampling,
                batch_size=ev.batch_size,
                prefix=prefix,
                rewards=rewards,
            )
        )

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {k: v for part in parts for k, v in part(model).items()}

    return evaluate


def build_batches(task: Any, collate: Any, *, batch_size: int, seed: int) -> BatchSource:
    """Finite datasets (``EpochTask``) run in reshuffled epochs, one permutation per epoch;
    generated tasks are sampled per batch. Either reaches any step without replaying."""
    if isinstance(task, EpochTask):
        return ListBatches(task.epoch_examples(), collate, batch_size=batch_size, seed=seed)
    return TaskBatches(task, collate, batch_size=batch_size, seed=seed)


def quantize_from_config(model: nn.Module, quantizer: Any, config: Any) -> Any:
    """Quantize the linears ``config.targets`` / ``config.exclude`` pick (if it has them)."""
    from splice.quantization import DEFAULT_EXCLUDE, quantize_model

    return quantize_model(
        model,
        quantizer,
        targets=getattr(config, "targets", "all-linear"),
        exclude=getattr(config, "exclude", DEFAULT_EXCLUDE),
    )


def build_experiment_model(config: ExperimentConfig) -> nn.Module:
    """The model a run trains: built from ``config.model``, ``init_from`` loaded, then
    ``config.quantizer`` applied to the loaded weights, then ``config.adapter`` (after the
    weights it adapts, before anything reads the trainable parameters). Seed first
    (``seed_everything(config.seed)``) to rebuild a run's exact starting point."""
    from splice.models.build import build_model
    from splice.registry import get_registry

    model = build_model(config.model)
    if config.init_from:
        load_model_weights(model, config.init_from)
    if config.quantizer is not None:
        quantizer = get_registry().build("quantizer", config.quantizer, None)
        quantize_from_config(model, quantizer, config.quantizer)
    if config.adapter is not None:
        model = get_registry().build("adapter", config.adapter, None).apply(model)
    from splice.quantization import quantization_report

    quantized = quantization_report(model)  # by the quantizer or a quantizing adapter (qlora)
    if quantized.layers:
        print(quantized.summary(), file=sys.stderr)
    return model


def preflight(config: ExperimentConfig, tokenizer: Any, task: Any) -> None:
    """Check the data and evaluation settings against tokenizer and model before step 1
    (``splice.training.preflight``); raises ``PreflightError`` naming the problem."""
    from splice.training.preflight import check_experiment

    tasks = {"data": (config.data.task, task)}
    tasks.update({f"eval.tasks.{k}": (v, build_task(v)) for k, v in config.eval.tasks.items()})
    if config.reference_data is not None:
        ref = config.reference_data.task
        tasks["reference_data"] = (ref, build_task(ref))
    check_experiment(config, tokenizer, tasks)


def build_rollouts(
    config: ExperimentConfig, tokenizer: Any, task: Any, model: nn.Module
) -> tuple[PromptBatches, Rollouts]:
    """An online run's prompt stream and per-step generator factory (``config.rollout``)."""
    from splice.generation.sampling import SamplingConfig

    ro = config.rollout
    limit = getattr(getattr(model, "config", None), "max_seq_len", None)
    max_prompt = None
    if isinstance(limit, int):
        max_prompt = limit - ro.max_new_tokens
        if max_prompt < 2:
            raise ValueError(
                f"rollout.max_new_tokens={ro.max_new_tokens} leaves no room for a prompt in the "
                f"model's max_seq_len={limit}"
            )
    prompts = PromptBatches(
        task,
        tokenizer,
        prompts_per_step=ro.prompts_per_step,
        seed=derive_seed(config.seed, "train-prompts"),
        max_prompt_len=max_prompt,
    )
    sampling = SamplingConfig(
        max_new_tokens=ro.max_new_tokens,
        temperature=ro.temperature,
        top_k=ro.top_k,
        top_p=ro.top_p,
        compile=ro.compile,
    )
    rollouts = Rollouts(
        sampling,
        tokenizer,
        seed=derive_seed(config.seed, "rollouts"),
        chunk=ro.generate_chunk,
        prompts_per_step=ro.prompts_per_step,
    )
    return prompts, rollouts


def _write_config(run_dir: Path, config: ExperimentConfig) -> None:
    atomic_write_text(
        run_dir / "config.json", json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
    )


def run_experiment(
    config: ExperimentConfig | Mapping[str, Any],
    *,
    resume: ResumeMode = False,
    overwrite: bool = False,
    allow_config_change: Iterable[str] = (),
) -> dict[str, Any]:
    """Train and evaluate the experiment ``config`` describes; returns the report dict.

    The run folder is claimed (locked, checked) before anything is written into it; a
    resume is accepted (config unchanged but for ``allow_config_change``, an intact
    checkpoint that fits the model) before the run's ``config.json`` is rewritten.

    Args:
        config: an ``ExperimentConfig`` (or its JSON dict).
        resume: ``True``: continue from the latest checkpoint in the run folder (an error if
            there is none); ``"auto"``: continue if there is one, else start fresh.
        overwrite: a fresh run may delete an earlier run's checkpoints in the folder.
        allow_config_change: dotted config paths (or their parents) a resume may change;
            any other difference from the run's saved ``config.json`` refuses the resume.

    Returns:
        ``{"name", "run_dir", "steps", "final_train_loss", "tokens_per_s", ..., "eval": {...}}``.

    Raises:
        RunFolderError: the folder is in use, holds another run, or has nothing to resume.
        ConfigDriftError: a resume with a changed config (names every changed field).
        CorruptCheckpointError: a resume with no intact checkpoint.
        ValueError: a resume whose checkpoint does not fit the config's model.
    """
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.model_validate(config)
    run_dir = Path(config.run_dir())
    main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes
    with claim_run_folder(run_dir if main else None, resume=resume, overwrite=overwrite):
        # "auto" resumes only when there is something to resume (the claim refused a
        # folder holding only set-aside checkpoints).
        resuming = resume is True or (bool(resume) and bool(checkpoint_entries(run_dir)))
        if resuming:
            check_resume_config(
                run_dir / "config.json", config.model_dump(mode="json"), allow_config_change
            )
        return _run(config, run_dir, resume=resume, resuming=resuming, main=main)


def _accept_resume(run_dir: Path, model: nn.Module) -> None:
    """Refuse a resume that could not load, before anything of the run is written."""
    from splice.checkpoint import CheckpointManager, CorruptCheckpointError
    from splice.checkpoint.manager import check_loadable

    mgr = CheckpointManager(run_dir / "checkpoints")
    latest = mgr.latest_intact(set_aside=True)  # damaged newer ones: warned, set aside
    if latest is None:
        raise CorruptCheckpointError(mgr.root, "no intact checkpoint left to resume from")
    check_loadable(latest, model)


def _run(
    config: ExperimentConfig, run_dir: Path, *, resume: ResumeMode, resuming: bool, main: bool
) -> dict[str, Any]:
    from splice.registry import get_registry

    reg = get_registry()

    seed_everything(config.seed)
    tokenizer = build_tokenizer(config.tokenizer)
    task = build_task(config.data.task)
    preflight(config, tokenizer, task)  # before anything slow: fail now, not at the end
    model = build_experiment_model(config)
    if main:
        if resuming:
            _accept_resume(run_dir, model)
        _write_config(run_dir, config)  # only now: a refused resume leaves the old one
    objective = reg.build("objective", config.objective, None)
    regularizers = [reg.build("regularizer", r, None) for r in config.regularizers]
    collate = build_collator(tokenizer, config.data, task)
    online = is_online(objective)
    if not online:  # an online run trains on its own rollouts, not on these labels
        from splice.training.preflight import check_trainable_tokens

        check_trainable_tokens(
            task,
            collate,
            where=getattr(config.data.task, "train", None) or f"task {config.data.task.type!r}",
            max_len=config.data.max_len,
            seed=config.seed,
        )
    if isinstance(objective, Prepares):  # dataset-level set-up at the starting weights
        objective.prepare(
            RunContext(
                model=model,
                tokenizer=tokenizer,
                task=task,
                collate=collate,
                run_dir=run_dir,
                batch_size=config.train.batch_size,
                max_len=config.data.max_len,
                resume=resuming,
            )
        )
    rollouts = None
    train: BatchSource
    if online:  # each step: a prompt batch -> collect -> updates (splice.training.online)
        train, rollouts = build_rollouts(config, tokenizer, task, model)
    else:
        train = build_batches(
            task,
            collate,
            batch_size=config.train.batch_size,
            seed=derive_seed(config.seed, "train-data"),
        )
    reg_data = None
    if config.reference_data is not None:
        ref_task = build_task(config.reference_data.task)
        ref_source = build_batches(
            ref_task,
            build_collator(tokenizer, config.reference_data, ref_task),
            batch_size=config.train.batch_size,
            seed=derive_seed(config.seed, "reference-data"),
        )
        reg_data = [b for _, b in zip(range(config.reference_batches), ref_source.batches(0))]
    ev = config.eval
    evaluator = None
    if ev.loss_batches or ev.exact_match_examples:
        evaluator = build_evaluator(config, tokenizer, objective, task, with_loss=not online)

    trainer_cls: Callable[..., Trainer] = Trainer
    if config.train.distributed != "none":  # under torchrun: DDP / FSDP2 over global batches
        from splice.training.distributed import distributed_trainer

        trainer_cls = distributed_trainer
    trainer = trainer_cls(
        model,
        objective,
        train,
        config.train,
        regularizers=regularizers,
        regularizer_data=reg_data,
        run_dir=run_dir,
        seed=config.seed,
        evaluator=evaluator,
        eval_every=ev.every,
        run_config=config.model_dump(mode="json"),
        title=config.name,
        rollouts=rollouts,
    )
    summary = trainer.fit(resume=resume)
    return {"name": config.name, **summary}
