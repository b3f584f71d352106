"""KL divergence to a frozen reference model (the starting weights), per token.

The penalty that RLHF (PPO) and GRPO use to keep a policy close to where it started;
here it is a ``Regularizer`` usable with any objective, SFT included.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from splice.rl.kl import k3
from torch import Tensor, nn

from splice_forgetting._lm import IGNORE_INDEX, forward_logits, next_token_targets
from splice_forgetting.configs import KLReferenceConfig


class KLToReference:
    """``penalty = weight * mean over counted positions of KL_t``.

    ``setup`` deep-copies the model (frozen, eval mode) as the reference. Each
    ``penalty`` call runs the model and the reference on ``batch["input_ids"]``
    (with ``attention_mask``/``positions``/``doc_ids`` when present). A position
    ``t < T-1`` counts when its next token is real (``config.tokens == "attention"``)
    or supervised (``"labels"``). Per position, with ``p = softmax(logits_theta)``
    and ``q = softmax(logits_ref)`` over the vocabulary:

    - ``estimator="full"``, ``direction="reverse"``: ``KL_t = sum_v p_v (log p_v - log q_v)``
    - ``estimator="full"``, ``direction="forward"``: ``KL_t = sum_v q_v (log q_v - log p_v)``
    - ``estimator="k3"``: ``KL_t = r - log r - 1``, ``r = q_y / p_y`` at the next token ``y``.

    Costs one extra forward of the model and one of the reference per step.
    """

    def __init__(self, config: KLReferenceConfig) -> None:
        self.config = config
        self.reference: nn.Module | None = None

    def setup(self, model: nn.Module, data: Iterable[Mapping[str, Any]] | None = None) -> None:
        reference = copy.deepcopy(model)
        reference.eval()
        reference.requires_grad_(False)
        self.reference = reference

    def per_token(self, model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """``(kl (B, T-1) float32, mask (B, T-1) bool)``: the divergence at each position."""
        if self.reference is None:
            raise RuntimeError("kl_reference: call setup(model, data) before penalty()")
        logp = torch.log_softmax(forward_logits(model, batch)[:, :-1].float(), dim=-1)
        with torch.no_grad():
            ref = forward_logits(self.reference, batch)[:, :-1].float()
            logq = torch.log_softmax(ref, dim=-1)  # (B, T-1, V)
        targets = next_token_targets(batch, use_labels=self.config.tokens == "labels")
        mask = targets != IGNORE_INDEX  # (B, T-1)
        if self.config.estimator == "k3":
            y = targets.clamp(min=0).unsqueeze(-1)
            kl = k3(logp.gather(-1, y).squeeze(-1), logq.gather(-1, y).squeeze(-1))  # (B, T-1)
        elif self.config.direction == "reverse":
            kl = (logp.exp() * (logp - logq)).sum(-1)
        else:
            kl = (logq.exp() * (logq - logp)).sum(-1)
        return kl, mask

    def penalty(self, model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        kl, mask = self.per_token(model, batch)
        n = mask.sum().clamp(min=1)
        return self.config.weight * (kl * mask).sum() / n


def build_kl_reference(config: KLReferenceConfig, ctx: object = None) -> KLToReference:
    return KLToReference(config)
