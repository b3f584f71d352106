"""Held-out loss and perplexity of any ``Objective`` over a set of batches."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from splice.data.device import batch_to
from splice.interfaces import Objective


def _token_count(metrics: Mapping[str, float], n_tokens: int) -> float:
    if n_tokens:
        return float(n_tokens)
    return float(metrics.get("tokens", 0.0))


def evaluate_loss(
    model: nn.Module, objective: Objective, batches: Iterable[Mapping[str, Any]]
) -> dict[str, float]:
    """Average ``objective.loss`` over ``batches``, weighting each batch by its target tokens.

    Token weighting makes the result independent of how the held-out set was split into
    batches: it is the mean loss per target token. Perplexity is ``exp`` of the mean
    cross-entropy (the objective's ``ce_loss`` metric when it reports one, e.g. SFT with an
    MoE auxiliary loss, else its ``loss``). Batches that report no token count weigh 1.

    Returns:
        ``{"loss", "perplexity", "tokens", "batches"}`` (plus ``ce_loss`` when reported).

    Raises:
        ValueError: ``batches`` is empty.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {"loss": 0.0, "ce_loss": 0.0}
    weight_total, tokens, count, has_ce = 0.0, 0.0, 0, True
    try:
        with torch.no_grad():
            for batch in batches:
                out = objective.loss(model, batch_to(batch, device))
                n = _token_count(out.metrics, out.n_tokens)
                w = n if n > 0 else 1.0
                sums["loss"] += float(out.loss) * w
                has_ce = has_ce and "ce_loss" in out.metrics
                sums["ce_loss"] += float(out.metrics.get("ce_loss", 0.0)) * w
                weight_total += w
                tokens += n
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_loss got no batches; expected at least one held-out batch")
    result = {"loss": sums["loss"] / weight_total, "tokens": tokens, "batches": float(count)}
    if has_ce:
        result["ce_loss"] = sums["ce_loss"] / weight_total
    ce = result.get("ce_loss", result["loss"])
    result["perplexity"] = math.exp(ce) if ce < 700 else math.inf  # exp overflows past ~709
    return result


__all__ = ["evaluate_loss"]
