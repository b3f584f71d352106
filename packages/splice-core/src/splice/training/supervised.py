"""The supervised step: ``grad_accum`` micro-batches, clip, one optimizer update.

With ``grad_accum > 1`` the step's loss is the token-weighted mean over all its
micro-batches, as if they were one batch: micro-batch ``i``, whose objective reports
``n_i`` tokens (``LossOutput.n_tokens``), backpropagates ``n_i * L_i``, and the summed
gradient is divided by ``sum_i n_i`` inside the clipping / optimizer step. A plain mean
of the micro-batch means would over-weight the tokens of short micro-batches (SFT
completions differ in length). Objectives that report no token count weigh every
micro-batch equally.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from splice.interfaces import LossOutput, SetsUp
from splice.training.clip import clip_gradients
from splice.training.configs import TrainConfig
from splice.training.schedule import lr_multiplier, set_learning_rate
from splice.training.step_hooks import after_optimizer_step
from splice.training.steps import Batch, StepHost, StepRecord, penalty_of


class SupervisedStep:
    """One update from ``grad_accum`` micro-batches of ``objective.loss(model, batch)``."""

    def setup_at_init(self, host: StepHost, data: Any) -> None:
        """Nothing: a supervised objective is set up when ``fit`` starts."""

    def setup_at_start(self, host: StepHost, data: Any) -> None:
        """``objective.setup(model, data)`` (e.g. a reference copy) at the starting weights."""
        if isinstance(host.objective, SetsUp):
            host.objective.setup(host.model, data)

    def trainable_modules(self, objective: Any) -> dict[str, nn.Module]:
        return {}

    def examples(self, micro_batches: int, config: TrainConfig) -> int:
        return micro_batches * config.batch_size

    def checkpoint_extra(self, objective: Any) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
        return None, {}

    def restore_extra(self, objective: Any, state: Mapping[str, Any], checkpoint: Path) -> None:
        """Nothing was saved."""

    def __call__(self, host: StepHost, batches: Iterator[Batch]) -> StepRecord:
        cfg = host.config
        lr = cfg.optimizer.lr * lr_multiplier(host.step, cfg.steps, cfg.schedule)
        set_learning_rate(host.optimizer, lr)
        loss_sum: Tensor | None = None  # sum_i w_i L_i
        pen_sum: Tensor | None = None
        weight_sum = 0.0
        tokens: Tensor | int = 0
        metrics: dict[str, Any] = {}
        for micro in range(cfg.grad_accum):
            try:
                batch = host.to_device(next(batches))
            except StopIteration:
                raise ValueError(
                    f"the training data ran out after {host.micro_batches + micro} micro-batches "
                    f"(step {host.step} of {cfg.steps}); give an endless BatchSource or fewer steps"
                ) from None
            # DDP decides at forward time whether the backward all-reduces: wrap both.
            with host.parallel.no_sync(host.model, micro == cfg.grad_accum - 1):
                with host.autocast():
                    out = host.loss_objective.loss(host.model, batch)
                    loss = out.loss
                    if host.regularizers:
                        pen = penalty_of(host.regularizers, host.model, batch)
                        loss = loss + pen
                weight = micro_batch_weight(out) if cfg.grad_accum > 1 else 1.0
                (loss * weight if weight != 1.0 else loss).backward()
            weight_sum += weight
            weighted = out.loss.detach() * weight
            loss_sum = weighted if loss_sum is None else loss_sum + weighted
            if host.regularizers:
                weighted = pen.detach() * weight
                pen_sum = weighted if pen_sum is None else pen_sum + weighted
            tokens = tokens + count_tokens(batch, out)
            for k, v in out.metrics.items():
                if k not in ("loss", "tokens"):
                    metrics[k] = metrics.get(k, 0.0) + v * weight
        # Every micro-batch had zero tokens: nothing was learnt; avoid dividing by zero.
        divisor = weight_sum if weight_sum > 0 else 1.0
        grad_norm = clip_gradients(host.params, cfg.max_grad_norm, host.optimizer, divisor=divisor)
        host.optimizer.step()
        host.optimizer.zero_grad(set_to_none=True)
        module_metrics = after_optimizer_step(host.model)  # e.g. MoE bias updates, load stats
        assert loss_sum is not None
        return StepRecord(
            step=host.step + 1,
            lr=lr,
            loss=loss_sum / divisor,
            tokens=tokens,
            grad_norm=host.parallel.full_tensor(grad_norm),
            metrics={**{k: v / divisor for k, v in metrics.items()}, **module_metrics},
            penalty=pen_sum / divisor if pen_sum is not None else None,
            micro_batches=cfg.grad_accum,
        )


def micro_batch_weight(out: LossOutput) -> float:
    """A micro-batch's weight in its step's loss: its token count, or 1 if it reports none."""
    if out.n_tokens or "tokens" in out.metrics:  # counted (possibly 0: nothing to learn)
        return float(out.n_tokens or out.metrics.get("tokens", 0.0))
    return 1.0


def count_tokens(batch: Batch, out: LossOutput) -> Tensor | int:
    """Tokens processed by one micro-batch: real (unpadded) input tokens."""
    mask = batch.get("attention_mask")
    if isinstance(mask, Tensor):
        return mask.sum()
    ids = batch.get("input_ids")
    if isinstance(ids, Tensor):
        return ids.numel()
    return int(out.n_tokens or 0)


__all__ = ["SupervisedStep", "count_tokens", "micro_batch_weight"]
