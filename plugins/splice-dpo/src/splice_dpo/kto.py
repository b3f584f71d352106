"""The ``kto`` objective: Kahneman-Tversky optimisation on unpaired labelled completions.

Batches come from ``UnpairedCollator``: rows ``0..N-1`` are the examples, rows ``N..2N-1``
the mismatched pairs used to estimate the reference point ``z`` (the policy/reference KL),
all in one forward. Following TRL, ``z = clamp(mean(kl_logps - ref_kl_logps), min=0)`` is
detached, and the loss is the mean over examples of

* desirable: ``w_d (1 - σ(β (r - z)))``
* undesirable: ``w_u (1 - σ(β (z - r)))``

with ``r = log π(y|x) - log π_ref(y|x)`` summed over the completion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from splice.interfaces import LossOutput
from splice.objectives.logprobs import batch_model_inputs
from splice.rl.reference import ReferenceModel
from torch import Tensor, nn

from splice_dpo.configs import KTOConfig
from splice_dpo.objective import sequence_logps


def kto_losses(
    logps: Tensor, ref_logps: Tensor, desirable: Tensor, kl: Tensor, config: KTOConfig
) -> tuple[Tensor, Tensor]:
    """Per-example KTO losses ``(N,)`` and implicit rewards ``β r`` ``(N,)`` (detached).

    Args:
        logps / ref_logps: ``(N,)`` summed completion log-probs, policy and reference.
        desirable: ``(N,)`` bool labels.
        kl: scalar reference point ``z`` (detached, >= 0).
    """
    r = logps - ref_logps
    want = config.desirable_weight * (1 - torch.sigmoid(config.beta * (r - kl)))
    avoid = config.undesirable_weight * (1 - torch.sigmoid(config.beta * (kl - r)))
    return torch.where(desirable, want, avoid), config.beta * r.detach()


class KTOObjective:
    """``loss(model, batch) -> LossOutput`` on ``UnpairedCollator`` batches.

    Metrics: ``loss``, ``kl`` (the reference point), ``rewards/chosen`` and
    ``rewards/rejected`` (mean implicit reward of desirable / undesirable examples, when the
    batch has any), ``rewards/margin``, ``logps/chosen``, ``logps/rejected`` (per token).
    """

    def __init__(self, config: KTOConfig | None = None) -> None:
        self.config = config or KTOConfig()
        self.reference: ReferenceModel | None = None

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None:
        if self.reference is None:
            self.reference = ReferenceModel(model, mode=self.config.reference)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        for key in ("input_ids", "score_mask", "desirable"):
            if key not in batch:
                raise ValueError(
                    f"a kto batch needs 'input_ids', 'score_mask' and 'desirable' "
                    f"(splice_dpo.data.UnpairedCollator); got keys {sorted(batch)}"
                )
        desirable = batch["desirable"].bool()
        n = desirable.shape[0]
        seq, counts, aux = sequence_logps(model, batch)  # (2N,)
        if self.reference is None:
            self.setup(model)
        assert self.reference is not None
        ref = self.reference.token_logprobs(
            batch["input_ids"], batch["score_mask"], **batch_model_inputs(batch)
        ).sum(-1)  # (2N,)
        kl = (seq[n:].detach() - ref[n:]).mean().clamp(min=0)
        losses, rewards = kto_losses(seq[:n], ref[:n], desirable, kl, self.config)
        loss = losses.mean()
        metrics: dict[str, float] = {"kl": float(kl)}
        with torch.no_grad():
            for side, mask in (("chosen", desirable), ("rejected", ~desirable)):
                if mask.any():
                    metrics[f"rewards/{side}"] = float(rewards[mask].mean())
                    metrics[f"logps/{side}"] = float(
                        seq[:n][mask].sum() / counts[:n][mask].sum().clamp(min=1)
                    )
            if desirable.any() and (~desirable).any():
                metrics["rewards/margin"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        if aux is not None and self.config.aux_loss_weight:
            loss = loss + self.config.aux_loss_weight * aux
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss=loss, metrics=metrics, n_tokens=n)


def build_kto(config: KTOConfig, ctx: object = None) -> KTOObjective:
    return KTOObjective(config)


__all__ = ["KTOObjective", "build_kto", "kto_losses"]
