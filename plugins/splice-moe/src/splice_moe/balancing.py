"""Load-balancing terms of the router, and the auxiliary-loss-free bias update.

- Switch/GShard loss ``E * sum_i f_i * P_i``: ``f_i`` the fraction of assignments routed to
  expert ``i`` (not differentiable), ``P_i`` the mean router probability of ``i``
  (differentiable). It is 1 when routing is uniform and grows with imbalance.
- transformers' pooled form (Mixtral, Qwen-MoE ``load_balancing_loss_func``): the same
  product with ``f_i`` and ``P_i`` taken over every layer's tokens at once, and ``f_i``
  counted per token (so it sums to ``k``): one loss per model, not a sum over layers.
- Router z-loss ``mean_t logsumexp(logits_t)^2`` (ST-MoE): keeps logits small.
- DeepSeek-V3 auxiliary-loss-free balancing: a per-expert bias added to the scores for
  top-k selection only, nudged by ``rate * sign(mean load - load_i)`` after each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def load_balancing_loss(scores: Tensor, routed: Tensor, *, normalize: bool) -> Tensor:
    """Switch/GShard auxiliary loss.

    Args:
        scores: ``(N, E)`` router scores (softmax, or sigmoid: then set ``normalize`` so each
            row sums to 1 as DeepSeek-V3's balance loss does).
        routed: ``(E,)`` assignments per expert.
    """
    probs = scores / scores.sum(dim=-1, keepdim=True) if normalize else scores
    f = routed.to(probs.dtype) / routed.sum().clamp_min(1)  # (E,) fraction of assignments
    p = probs.mean(dim=0)  # (E,)
    return scores.shape[-1] * (f * p).sum()


@dataclass(frozen=True)
class PooledBalancingLoss:
    """``finish`` of a ``PooledAuxLoss``: transformers' load-balancing loss over all layers.

    ``sums = [C (E), S (E), rows, extra]`` summed over layers: ``C`` assignments per
    expert (not differentiable), ``S`` router probabilities summed over tokens, ``rows`` tokens,
    ``extra`` plain terms already weighted (the z-loss). Returns
    ``weight * E * sum_i (C_i / rows) * (S_i / rows) + extra``.
    """

    n_experts: int
    weight: float

    def __call__(self, sums: Tensor) -> Tensor:
        e = self.n_experts
        assigned, probs, rows, extra = sums[:e], sums[e : 2 * e], sums[2 * e], sums[2 * e + 1]
        return self.weight * e * (assigned * probs).sum() / rows.square() + extra


def balancing_sums(scores: Tensor, routed: Tensor, extra: Tensor, *, normalize: bool) -> Tensor:
    """One layer's ``(2E + 2,)`` float32 ``sums`` for ``PooledBalancingLoss`` (see there)."""
    probs = scores / scores.sum(dim=-1, keepdim=True) if normalize else scores
    rows = scores.new_full((1,), scores.shape[0], dtype=torch.float32)
    return torch.cat([routed.float(), probs.float().sum(dim=0), rows, extra.float().reshape(1)])


def router_z_loss(logits: Tensor) -> Tensor:
    """``mean_t logsumexp(logits_t)^2`` over ``logits (N, E)``."""
    return torch.logsumexp(logits, dim=-1).square().mean()


def router_entropy(scores: Tensor) -> Tensor:
    """Mean per-token entropy (nats) of the routing distribution ``scores (N, E)``, normalised."""
    p = scores / scores.sum(dim=-1, keepdim=True)
    return -(p * p.clamp_min(1e-20).log()).sum(dim=-1).mean()


@torch.no_grad()
def update_selection_bias(bias: Tensor, load: Tensor, rate: float) -> None:
    """In place: ``bias_i += rate * sign(mean(load) - load_i)`` (under-loaded experts rise)."""
    load = load.float()
    bias.add_(rate * torch.sign(load.mean() - load))


@torch.no_grad()
def routing_stat_sums(
    logits: Tensor,
    scores: Tensor,
    routed: Tensor,
    dropped: Tensor,
    *,
    sigmoid: bool,
    lb: Tensor | None = None,
    z: Tensor | None = None,
) -> Tensor:
    """One forward's routing statistics as one ``(E + 5,)`` float32 vector of sums.

    ``[routed (E), dropped, entropy * N, lb_loss * N, z_loss * N, N]``: summing these
    vectors over micro-batches and dividing by ``N`` gives token-weighted means. Off the
    autograd graph, from ``logits``/``scores (N, E)``: for softmax scoring the entropy
    ``-sum p log p`` is ``logsumexp - sum p * logits`` (``log p = logits - lse``), so one
    ``logsumexp`` serves the entropy and the z-loss, and no per-element log runs.
    ``lb`` / ``z``: the terms already computed for the loss, reused when given.
    """
    n = scores.shape[0]
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    if sigmoid:
        entropy = router_entropy(scores) * n
    else:
        entropy = lse.sum() - (scores * logits).sum()
    if lb is None:
        lb = load_balancing_loss(scores, routed, normalize=sigmoid)
    z_sum = lse.square().sum() if z is None else z.detach() * n
    scalars = torch.stack([dropped.float(), entropy, lb.detach() * n, z_sum, lse.new_tensor(n)])
    return torch.cat([routed.float(), scalars.float()])
