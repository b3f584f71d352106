"""One training step of an online objective (PPO, GRPO), and its resumable state.

The ``OnlineStep`` strategy (``splice.training.steps``) runs a step: check the last steps'
losses and the weights are finite (``host.guard_finite``), take the next prompt batch,
``collect`` experience with the policy and a ``RolloutGenerator`` seeded for this step, then one optimizer update (backward, clip,
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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from splice.deprecation import deprecated_attribute
from splice.interfaces import (
    HasTrainableModules,
    Minibatched,
    OnlineObjective,
    RolloutFactory,
    SetsUp,
    Stateful,
)
from splice.training.clip import clip_gradients
from splice.training.configs import TrainConfig
from splice.training.schedule import lr_multiplier, set_learning_rate
from splice.training.step_hooks import after_optimizer_step
from splice.training.steps import Batch, StepHost, StepRecord, penalty_of


def is_online(objective: Any) -> bool:
    """Whether ``objective`` generates its own experience (has ``collect``)."""
    return isinstance(objective, OnlineObjective)


def trainable_modules(objective: Any) -> dict[str, nn.Module]:
    """The objective's own modules that train with the policy (e.g. PPO's value head)."""
    return dict(objective.trainable_modules()) if isinstance(objective, HasTrainableModules) else {}


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
    if isinstance(objective, Stateful):
        for k, v in objective.state_dict().items():
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
    if isinstance(objective, Stateful):
        state: dict[str, Any] = dict(meta)
        state.update({k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
        if state:
            objective.load_state_dict(state)


def minibatches(objective: Any, experience: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The objective's minibatches of ``experience`` (``Minibatched``), else it whole once."""
    if isinstance(objective, Minibatched):
        return iter(objective.minibatches(experience))
    return iter([experience])


class OnlineStep:
    """One rollout with the policy, then one optimizer update per minibatch.

    Args:
        rollouts: makes each step's bound generator (a ``RolloutFactory`` such as
            ``splice.rl.rollout.Rollouts``); None fails at the first step, naming it.
    """

    def __init__(self, rollouts: RolloutFactory | None) -> None:
        self.rollouts = rollouts

    def setup_at_init(self, host: StepHost, data: Any) -> None:
        """``setup(policy, data)`` before the optimizer is built (a value head made here
        joins it) and before any checkpoint is loaded; refuses ``grad_accum > 1``."""
        if isinstance(host.objective, SetsUp):
            host.objective.setup(host.policy, data)
        if host.config.grad_accum != 1:
            raise ValueError(
                f"train.grad_accum={host.config.grad_accum}: an online objective makes one "
                "update per minibatch it yields; size its minibatches instead"
            )

    def setup_at_start(self, host: StepHost, data: Any) -> None:
        """Nothing: set up in ``setup_at_init``."""

    def trainable_modules(self, objective: Any) -> dict[str, nn.Module]:
        return trainable_modules(objective)

    def examples(self, micro_batches: int, config: TrainConfig) -> int:
        # micro_batches counts prompt batches (one per step)
        per_step = self.rollouts.prompts_per_step if self.rollouts is not None else 0
        return micro_batches * per_step

    def checkpoint_extra(self, objective: Any) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
        tensors, meta = objective_state(objective)
        return tensors, {"objective": meta}

    def restore_extra(self, objective: Any, state: Mapping[str, Any], checkpoint: Path) -> None:
        from safetensors.torch import load_file

        path = checkpoint / "objective.safetensors"
        tensors = load_file(str(path)) if path.is_file() else {}
        load_objective_state(objective, tensors, state.get("objective", {}))

    def __call__(self, host: StepHost, batches: Iterator[Batch]) -> StepRecord:
        cfg = host.config
        if self.rollouts is None:
            raise ValueError(
                "an online objective needs the trainer's `rollouts` (a generator factory)"
            )
        # The rollout samples from the weights: a NaN loss of an earlier step (not flushed
        # yet when log_every > 1) or a non-finite update would make it fail inside sampling
        # and leave an unverified checkpoint as the resume point. Stop here instead.
        host.guard_finite()
        lr = cfg.optimizer.lr * lr_multiplier(host.step, cfg.steps, cfg.schedule)
        set_learning_rate(host.optimizer, lr)  # each group's lr_scale too (a value head's)
        try:
            prompts = host.to_device(next(batches))
        except StopIteration:
            raise ValueError(f"the prompt stream ran out at step {host.step}") from None
        index = prompts.get("index")
        first = int(index[0]) if isinstance(index, Tensor) and index.numel() else 0
        generator = self.rollouts.generator(host.step, first)
        t0 = time.perf_counter()
        # Under the run's precision, as the updates: in bf16 the rollout samples from the
        # policy the loss computes, and stored log-probs (old, reference) match the loss's
        # (a first ratio of exactly 1); it also decodes at bf16 speed (GRPO benchmark, bf16:
        # 1.77x -> 2.10x TRL at beta = 0, 1.45x -> 2.00x at beta = 0.04).
        with host.autocast():
            experience = host.objective.collect(host.policy, prompts, generator)
        t1 = time.perf_counter()
        rollout_metrics = host.parallel.mean_metrics(dict(experience.get("metrics", {})))
        sums: dict[str, float] = {}
        losses: list[Tensor] = []
        norms: list[Tensor] = []
        penalties: list[Tensor] = []
        for minibatch in minibatches(host.objective, experience):
            with host.autocast():
                out = host.loss_objective.loss(host.model, minibatch)  # a LossOutput
                loss = out.loss
                if host.regularizers:
                    pen = penalty_of(host.regularizers, host.model, minibatch)
                    loss = loss + pen
                    penalties.append(pen.detach())
            loss.backward()
            host.parallel.sync_grads(host.extra_modules)
            norm = clip_gradients(host.params, cfg.max_grad_norm, host.optimizer)
            host.optimizer.step()
            host.optimizer.zero_grad(set_to_none=True)
            module_metrics = after_optimizer_step(host.model)  # e.g. MoE router biases
            losses.append(out.loss.detach())
            if norm is not None:
                norms.append(norm.detach())
            for k, v in out.metrics.items():
                if k not in ("loss", "tokens"):
                    sums[k] = sums.get(k, 0.0) + float(v)
        n = len(losses)
        metrics: dict[str, Any] = {**rollout_metrics, **{k: v / max(n, 1) for k, v in sums.items()}}
        if n:
            metrics.update(module_metrics)  # the last update's
        metrics.update(updates=float(n), rollout_s=t1 - t0, update_s=time.perf_counter() - t1)
        mask = experience.get("completion_mask")
        zero = torch.zeros((), device=host.device)
        return StepRecord(
            step=host.step + 1,
            lr=lr,
            loss=torch.stack(losses).mean() if losses else zero,
            tokens=int(mask.sum()) if isinstance(mask, Tensor) else 0,
            grad_norm=torch.stack(norms).mean() if norms else None,
            penalty=torch.stack(penalties).mean() if penalties else None,
            metrics=metrics,
            micro_batches=1,  # prompt batches consumed: the prompt stream's position
        )


def _online_train_step(trainer: Any, batches: Iterator[Batch]) -> StepRecord:
    """What ``online_train_step(trainer, batches)`` was: one step of an online trainer."""
    return trainer.train_step(batches)  # type: ignore[no-any-return]


__getattr__ = deprecated_attribute(
    __name__,
    {"online_train_step": ("Trainer.train_step (its OnlineStep)", lambda: _online_train_step)},
    removed_in="splice-core 0.3.0",
)

__all__ = [
    "OnlineStep",
    "is_online",
    "load_objective_state",
    "minibatches",
    "objective_state",
    "trainable_modules",
    "unwrap",
]
