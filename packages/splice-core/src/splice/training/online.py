"""One training step of an online objective (PPO, GRPO), and its resumable state.

A step is: take the next prompt batch, ``collect`` experience with the policy and a
``RolloutGenerator`` seeded for this step, then one optimizer update (backward, clip,
step) per minibatch the objective yields from ``minibatches(experience)`` (default: the
whole experience once). The step's record holds the rollout's metrics (``collect``'s
``experience["metrics"]``), the updates' loss metrics averaged over updates, ``updates``,
and the time split ``rollout_s`` / ``update_s``.

The objective's optional extras (see ``splice.interfaces.OnlineObjective``):
``setup(model, data)`` runs once at the starting weights, before a checkpoint is loaded;
``trainable_modules()`` adds modules (a value head) to the optimizer and to checkpoints;
``state_dict()`` / ``load_state_dict()`` carry anything else a resume needs (an adaptive
KL coefficient, a reference copy): tensors go to ``objective.safetensors``, other values
to ``trainer_state.json``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from splice.interfaces import OnlineObjective
from splice.training.clip import clip_gradients
from splice.training.schedule import lr_multiplier, set_learning_rate
from splice.training.step_hooks import after_optimizer_step

if TYPE_CHECKING:
    from splice.training.trainer import Trainer


def is_online(objective: Any) -> bool:
    """Whether ``objective`` generates its own experience (has ``collect``)."""
    return isinstance(objective, OnlineObjective)


def trainable_modules(objective: Any) -> dict[str, nn.Module]:
    """The objective's own modules that train with the policy (e.g. PPO's value head)."""
    get = getattr(objective, "trainable_modules", None)
    return dict(get()) if callable(get) else {}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP-style ``.module`` wrappers (generation needs its methods)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module  # type: ignore[assignment]
    return model


def objective_state(objective: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, json)`` of the objective: its trainable modules' weights and ``state_dict``."""
    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {}
    for name, module in trainable_modules(objective).items():
        for k, v in module.state_dict().items():
            tensors[f"module.{name}.{k}"] = v.detach().contiguous().cpu()
    get = getattr(objective, "state_dict", None)
    if callable(get):
        for k, v in get().items():
            if isinstance(v, Tensor):
                tensors[f"state.{k}"] = v.detach().contiguous().cpu()
            else:
                meta[k] = v
    # safetensors refuses shared storage (a reference copy's tied embedding / lm_head):
    # store each name's own copy; loading writes the same values into the tied parameter.
    seen: set[int] = set()
    for k, v in tensors.items():
        if v.untyped_storage().data_ptr() in seen:
            tensors[k] = v.clone()
        seen.add(v.untyped_storage().data_ptr())
    return tensors, meta


def load_objective_state(
    objective: Any, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    """Restore what ``objective_state`` saved."""
    for name, module in trainable_modules(objective).items():
        prefix = f"module.{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(sd)
    load = getattr(objective, "load_state_dict", None)
    if callable(load):
        state: dict[str, Any] = dict(meta)
        state.update({k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
        if state:
            load(state)


def _minibatches(objective: Any, experience: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    split = getattr(objective, "minibatches", None)
    return iter(split(experience)) if callable(split) else iter([experience])


def online_train_step(trainer: Trainer, batches: Iterator[Mapping[str, Any]]) -> None:
    """Collect one rollout with ``trainer``'s policy, then update on each of its minibatches."""
    from splice.training.trainer import _Pending

    cfg = trainer.config
    if trainer.rollouts is None:
        raise ValueError("an online objective needs the trainer's `rollouts` (a generator factory)")
    lr = cfg.optimizer.lr * lr_multiplier(trainer.step, cfg.steps, cfg.schedule)
    set_learning_rate(trainer.optimizer, lr)  # each group's lr_scale too (a value head's)
    try:
        prompts = trainer._to_device(next(batches))
    except StopIteration:
        raise ValueError(f"the prompt stream ran out at step {trainer.step}") from None
    index = prompts.get("index")
    first = int(index[0]) if isinstance(index, Tensor) and index.numel() else 0
    generator = trainer.rollouts.generator(trainer.step, first)
    t0 = time.perf_counter()
    experience = trainer.objective.collect(trainer.policy, prompts, generator)
    t1 = time.perf_counter()
    rollout_metrics = trainer.reduce_rollout_metrics(dict(experience.get("metrics", {})))
    sums: dict[str, float] = {}
    losses: list[Tensor] = []
    norms: list[Tensor] = []
    penalties: list[Tensor] = []
    for minibatch in _minibatches(trainer.objective, experience):
        with trainer._autocast():
            out = trainer.objective.loss(trainer.model, minibatch)  # a LossOutput
            loss = out.loss
            if trainer.regularizers:
                pen = sum(r.penalty(trainer.model, minibatch) for r in trainer.regularizers)
                loss = loss + pen
                penalties.append(pen.detach())
        loss.backward()
        trainer.sync_extra_grads()
        norm = clip_gradients(trainer.params, cfg.max_grad_norm, trainer.optimizer)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        module_metrics = after_optimizer_step(trainer.model)  # e.g. MoE router biases
        losses.append(out.loss.detach())
        if norm is not None:
            norms.append(norm.detach())
        for k, v in out.metrics.items():
            if k not in ("loss", "tokens"):
                sums[k] = sums.get(k, 0.0) + float(v)
    n = len(losses)
    trainer.micro_batches += 1  # prompt batches consumed: the prompt stream's position
    trainer.step += 1
    metrics: dict[str, Any] = {**rollout_metrics, **{k: v / max(n, 1) for k, v in sums.items()}}
    if n:
        metrics.update(module_metrics)  # the last update's
    metrics.update(updates=float(n), rollout_s=t1 - t0, update_s=time.perf_counter() - t1)
    mask = experience.get("completion_mask")
    tokens = int(mask.sum()) if isinstance(mask, Tensor) else 0
    zero = torch.zeros((), device=trainer.device)
    trainer._pending.append(
        _Pending(
            step=trainer.step,
            lr=lr,
            loss=torch.stack(losses).mean() if losses else zero,
            tokens=tokens,
            grad_norm=torch.stack(norms).mean() if norms else None,
            penalty=torch.stack(penalties).mean() if penalties else None,
            metrics=metrics,
        )
    )


__all__ = [
    "is_online",
    "load_objective_state",
    "objective_state",
    "online_train_step",
    "trainable_modules",
    "unwrap",
]
