"""The ``dpo`` objective: one forward over chosen + rejected, any registered preference loss.

Each step: the policy's per-token log-probs of the ``(2B, T)`` batch
(``splice.objectives.logprobs.token_logprobs``, completion tokens only), summed per row
and split into chosen / rejected; the reference's the same way (a frozen copy, the policy
with its adapters off, or values precomputed once over the dataset); then
``loss_fn(PreferenceLogps, config) -> (B,)`` and its mean.

Metrics: ``loss``, ``rewards/chosen``, ``rewards/rejected`` (batch means of the implicit
rewards), ``rewards/margin``, ``rewards/accuracy`` (share of pairs whose chosen reward
is higher), ``logps/chosen``, ``logps/rejected`` (per-token log-prob of each side),
``aux_loss`` when the model reports one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from splice.interfaces import LossOutput
from splice.objectives.logprobs import batch_model_inputs, token_logprobs
from splice.objectives.preference import loss_needs_reference
from splice.registry import get_registry
from splice.rl.reference import ReferenceModel
from torch import Tensor, nn

from splice_dpo.configs import DPOConfig
from splice_dpo.losses import PreferenceLogps, as_output
from splice_dpo.packing import sequence_sums

BATCH_KEYS = ("input_ids", "attention_mask", "score_mask", "n_pairs")


def resolve_loss(config: Any) -> Callable[..., Any]:
    """The registered ``preference_loss`` function for a loss config."""
    return get_registry().get("preference_loss", config.type).resolve_factory()


def sequence_logps(
    model: nn.Module, batch: Mapping[str, Any]
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(summed log-probs (2B,), token counts (2B,) float32, aux_loss)`` of one forward,
    in any ``PreferenceCollator`` layout (or one sequence per row: ``UnpairedCollator``)."""
    _check_takes_packing(model, batch)
    out = token_logprobs(
        model, batch["input_ids"], batch["score_mask"], **batch_model_inputs(batch)
    )
    ids = batch.get("sequence_ids")  # packed layouts; else row i is sequence i
    n = 2 * int(batch["n_pairs"]) if ids is not None else out.logprobs.shape[0]
    sums, counts = sequence_sums(out.logprobs, out.mask, ids, n)
    return sums, counts, out.aux_loss


_PACKING_KEYS = ("positions", "doc_ids", "branch_ids")


def _check_takes_packing(model: nn.Module, batch: Mapping[str, Any]) -> None:
    """A packed batch needs a model whose forward takes its packing inputs: else say which
    (a model that ignored them would attend across sequences)."""
    keys = [k for k in _PACKING_KEYS if k in batch]
    if not keys:
        return
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a wrapper without a signature: let it try
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(
            f"{type(model).__name__}.forward takes no {missing}, which this packed preference "
            "batch needs; use the padded layout (the task's layout='padded', or "
            "PreferenceCollator(layout='padded'))"
        )


class DPOObjective:
    """``loss(model, batch) -> LossOutput`` on ``PreferenceCollator`` batches; see the module doc."""

    def __init__(self, config: DPOConfig | None = None) -> None:
        self.config = config or DPOConfig()
        self.loss_fn = resolve_loss(self.config.loss)
        # Declared by the config class, else found by calling the loss without a reference.
        self.needs_reference = loss_needs_reference(self.loss_fn, self.config.loss)
        self.reference: ReferenceModel | None = None

    # -- set-up ------------------------------------------------------------
    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None:
        """Take the reference at the model's starting weights (the Trainer calls this before
        resuming, as for regularizers). Reference-free losses and precomputed runs skip it."""
        if self.needs_reference and not self.config.precompute_reference and self.reference is None:
            self.reference = ReferenceModel(model, mode=self.config.reference)

    def prepare(self, context: Any) -> None:
        """Precompute reference log-probs over the task's data when configured (``splice run``)."""
        if self.needs_reference and self.config.precompute_reference:
            from splice_dpo.precompute import attach_precomputed_reference

            attach_precomputed_reference(context, mode=self.config.reference)

    # -- the loss ----------------------------------------------------------
    def _reference_logps(
        self, model: nn.Module, batch: Mapping[str, Any], n: int
    ) -> tuple[Tensor, Tensor]:
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        if self.config.precompute_reference:
            raise ValueError(
                "dpo: precompute_reference is set but the batch has no 'ref_chosen_logps'; "
                "the data must come from a preference task prepared by `splice run` "
                "(or call splice_dpo.precompute.precompute_reference_logps yourself)"
            )
        if self.reference is None:  # used outside the Trainer: the weights now are the start
            self.setup(model)
        assert self.reference is not None
        ref_tokens = self.reference.token_logprobs(
            batch["input_ids"], batch["score_mask"], **batch_model_inputs(batch)
        )  # (R, T-1)
        mask = batch["score_mask"][:, 1:].bool()
        ref, _ = sequence_sums(ref_tokens, mask, batch.get("sequence_ids"), 2 * n)  # (2B,)
        return ref[:n], ref[n:]

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise ValueError(
                f"a dpo batch needs {list(BATCH_KEYS)} (splice_dpo.data.PreferenceCollator); "
                f"missing {missing}, got keys {sorted(batch)}"
            )
        n = int(batch["n_pairs"])
        if "sequence_ids" not in batch and batch["input_ids"].shape[0] != 2 * n:
            raise ValueError(
                f"a dpo batch holds 2 * n_pairs rows (chosen then rejected), got "
                f"{batch['input_ids'].shape[0]} rows for n_pairs={n}"
            )
        seq, counts, aux = sequence_logps(model, batch)  # (2B,), (2B,)
        ref_c, ref_r = (None, None)
        if self.needs_reference:
            ref_c, ref_r = self._reference_logps(model, batch, n)
        logps = PreferenceLogps(seq[:n], seq[n:], counts[:n], counts[n:], ref_c, ref_r)
        out = as_output(self.loss_fn(logps, self.config.loss), logps, self.config.loss)
        loss = out.losses.mean()
        metrics = preference_metrics(logps, out.chosen_rewards, out.rejected_rewards)
        if aux is not None and self.config.aux_loss_weight:
            loss = loss + self.config.aux_loss_weight * aux
        if aux is not None:
            metrics["aux_loss"] = float(aux.detach())
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss=loss, metrics=metrics, n_tokens=n)


def preference_metrics(
    logps: PreferenceLogps, chosen_rewards: Tensor, rejected_rewards: Tensor
) -> dict[str, float]:
    """The logged metrics of one batch (floats; see the module docstring)."""
    with torch.no_grad():
        margin = chosen_rewards - rejected_rewards
        per_token = lambda s, c: float(s.detach().sum() / c.sum().clamp(min=1.0))  # noqa: E731
        return {
            "rewards/chosen": float(chosen_rewards.mean()),
            "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/margin": float(margin.mean()),
            "rewards/accuracy": float((margin > 0).float().mean()),
            "logps/chosen": per_token(logps.chosen, logps.chosen_tokens),
            "logps/rejected": per_token(logps.rejected, logps.rejected_tokens),
        }


def build_dpo(config: DPOConfig, ctx: object = None) -> DPOObjective:
    return DPOObjective(config)


__all__ = ["DPOObjective", "build_dpo", "preference_metrics", "resolve_loss", "sequence_logps"]
