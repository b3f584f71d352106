"""Elastic Weight Consolidation with a diagonal Fisher, stored as safetensors.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks" (PNAS 2017).
The Fisher information of the old task says how much each weight mattered to it;
EWC pulls important weights back hard and lets unimportant ones move freely.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from splice_forgetting._lm import token_nll, trainable_parameters
from splice_forgetting.anchor import AnchoredQuadraticPenalty
from splice_forgetting.configs import EWCConfig

FISHER_FORMAT = "splice-ewc-fisher"

LossFn = Callable[[nn.Module, Mapping[str, Any]], Tensor]


def estimate_fisher(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    n_batches: int,
    loss_fn: LossFn = token_nll,
) -> tuple[dict[str, Tensor], int]:
    """Diagonal empirical Fisher: mean over batches of the squared batch-loss gradient.

    ``F_i = 1/N * sum_b (d loss_b / d theta_i)^2`` for the first ``N <= n_batches``
    batches, where ``loss_b`` is the batch's mean negative log-likelihood. The model
    runs in eval mode (no dropout noise in the estimate); ``.grad`` is left untouched.

    Returns:
        ``({name: F (same shape as the parameter, float32)}, N)``.

    Raises:
        ValueError: ``batches`` is empty.
    """
    params = trainable_parameters(model)
    names, tensors = list(params), list(params.values())
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()
    count = 0
    try:
        for batch in itertools.islice(batches, n_batches):
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
            for name, grad in zip(names, grads):
                if grad is not None:
                    fisher[name] += grad.detach().float().square()
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError(
            "ewc: no batches to estimate the Fisher from (the old task's data is empty)"
        )
    return {n: f / count for n, f in fisher.items()}, count


def save_fisher(fisher: Mapping[str, Tensor], path: str | Path, *, n_batches: int) -> None:
    """Write ``fisher`` to ``path`` (safetensors), atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {n: t.detach().cpu().contiguous() for n, t in fisher.items()}
    save_file(tensors, str(tmp), metadata={"format": FISHER_FORMAT, "n_batches": str(n_batches)})
    os.replace(tmp, path)


def load_fisher(
    path: str | Path, expected: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Read a Fisher file; with ``expected`` (name -> parameter), check names and shapes.

    Raises:
        ValueError: the file is not a splice Fisher, or it does not match the model.
    """
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FISHER_FORMAT:
            raise ValueError(
                f"ewc.fisher_path: {path} is not an EWC Fisher file "
                f"(format={meta.get('format')!r}, expected {FISHER_FORMAT!r})"
            )
        fisher = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if expected is not None:
        missing = sorted(set(expected) - set(fisher))
        extra = sorted(set(fisher) - set(expected))
        if missing or extra:
            raise ValueError(
                f"ewc.fisher_path: {path} does not match the model's trainable parameters "
                f"(missing {missing[:5]}, unexpected {extra[:5]})"
            )
        for name, param in expected.items():
            if tuple(fisher[name].shape) != tuple(param.shape):
                raise ValueError(
                    f"ewc.fisher_path: {path}: {name} has shape {tuple(fisher[name].shape)}, "
                    f"the model's parameter has {tuple(param.shape)}"
                )
    return fisher


class EWC(AnchoredQuadraticPenalty):
    """``penalty = weight / 2 * sum_i F_i (theta_i - theta0_i)^2``.

    ``setup(model, data)`` must see the model at its old-task weights and, unless
    ``config.fisher_path`` exists, batches of the *old* task (not the new one).

    Args:
        config: the EWC config.
        loss_fn: ``loss_fn(model, batch) -> scalar`` whose gradients define the Fisher;
            defaults to the mean next-token NLL over supervised tokens. Pass an
            objective's loss to use EWC with objectives other than language modelling.
    """

    name = "ewc"

    def __init__(self, config: EWCConfig, *, loss_fn: LossFn = token_nll) -> None:
        super().__init__(config.weight)
        self.config = config
        self.loss_fn = loss_fn
        self.fisher: dict[str, Tensor] = {}
        self.fisher_batches = 0

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None:
        params = self._snapshot(model)
        path = self.config.fisher_path
        if path is not None and Path(path).exists():
            fisher = load_fisher(path, expected=params)
            self.fisher_batches = -1  # loaded, not estimated here
        else:
            if data is None:
                raise ValueError(
                    "ewc: setup needs the old task's batches to estimate the Fisher "
                    "(or set fisher_path to an existing Fisher file)"
                )
            fisher, self.fisher_batches = estimate_fisher(
                model, data, n_batches=self.config.n_batches, loss_fn=self.loss_fn
            )
            if path is not None:
                save_fisher(fisher, path, n_batches=self.fisher_batches)
        self.fisher = {n: f.float() for n, f in fisher.items()}
        self.importance = _normalized(self.fisher, self.config.normalize)


def _normalized(fisher: Mapping[str, Tensor], how: str) -> dict[str, Tensor]:
    if how == "none":
        return dict(fisher)
    flat = torch.cat([f.reshape(-1) for f in fisher.values()])
    scale = flat.mean() if how == "mean" else flat.max()
    if float(scale) <= 0.0:
        raise ValueError(f"ewc.normalize={how!r}: the Fisher is all zeros, cannot normalise")
    return {n: f / scale for n, f in fisher.items()}


def build_ewc(config: EWCConfig, ctx: object = None) -> EWC:
    return EWC(config)
