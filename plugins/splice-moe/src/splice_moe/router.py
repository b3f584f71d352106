"""The router: a linear gate in float32 that picks ``top_k`` experts per token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class Routing:
    """One forward's routing decision for ``N`` tokens and ``E`` experts.

    Attributes:
        logits: ``(N, E)`` float32 gate outputs (with training noise, if any).
        scores: ``(N, E)`` float32 softmax or sigmoid of ``logits``.
        top_idx: ``(N, k)`` chosen experts (distinct per token).
        top_weight: ``(N, k)`` float32 weights of the chosen experts' outputs.
    """

    logits: Tensor
    scores: Tensor
    top_idx: Tensor
    top_weight: Tensor


class Router(nn.Module):
    """``x (N, D) -> Routing``: ``scores = softmax|sigmoid(gate(x))``, top-k of ``scores + bias``.

    The gate runs in float32 even under bf16 autocast: top-k on rounded logits flips
    choices between near-tied experts, and the softmax / z-loss need the range.

    Args:
        d_model: input width ``D``.
        n_experts: ``E``.
        top_k: ``k``.
        scoring: ``"softmax"`` or ``"sigmoid"``.
        normalize_top_k: divide the ``k`` chosen scores by their sum.
        route_scale: multiplier of the final weights.
        jitter: training-only multiplicative input noise ``U(1 - jitter, 1 + jitter)``.
        noise: training-only Gaussian noise std added to the logits.
        n_groups / top_groups: group-limited routing (DeepSeek-V3): only experts in a token's
            ``top_groups`` best of ``n_groups`` equal groups (each scored by the sum of its
            two highest selection scores) may be chosen.
        selection_bias: keep a per-expert bias (buffer ``expert_bias``, float32) added to the
            scores for top-k selection only, never to the weights (DeepSeek-V3's
            auxiliary-loss-free balancing; the layer updates it after optimizer steps).
    """

    def __init__(
        self,
        d_model: int,
        n_experts: int,
        top_k: int,
        *,
        scoring: str = "softmax",
        normalize_top_k: bool = True,
        route_scale: float = 1.0,
        jitter: float = 0.0,
        noise: float = 0.0,
        selection_bias: bool = False,
        n_groups: int = 1,
        top_groups: int | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be in [1, n_experts={n_experts}]")
        self.n_experts, self.top_k = n_experts, top_k
        self.scoring, self.normalize_top_k, self.route_scale = scoring, normalize_top_k, route_scale
        self.jitter, self.noise = jitter, noise
        self.n_groups = n_groups
        self.top_groups = n_groups if top_groups is None else top_groups
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.expert_bias: Tensor | None
        if selection_bias:
            self.register_buffer("expert_bias", torch.zeros(n_experts, dtype=torch.float32))
        else:
            self.expert_bias = None

    def forward(self, x: Tensor, allowed: Tensor | None = None) -> Routing:
        """Route ``x (N, D)``; ``allowed (N, E)`` bool restricts each token's experts
        (modality isolation): the others get no score and are never chosen."""
        with torch.autocast(x.device.type, enabled=False):
            h = x.float()  # (N, D)
            if self.training and self.jitter > 0:
                h = h * torch.empty_like(h).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
            logits = F.linear(h, self.gate.weight.float())  # (N, E)
            if self.training and self.noise > 0:
                logits = logits + torch.randn_like(logits) * self.noise
            if allowed is not None:  # a large finite value: 0 * it stays 0 in the statistics
                logits = logits.masked_fill(~allowed, -1e9)
            if self.scoring == "softmax":
                scores = logits.softmax(dim=-1)
            else:
                scores = logits.sigmoid()
            choose = scores if self.expert_bias is None else scores + self.expert_bias.float()
            if self.top_groups < self.n_groups:
                choose = self._limit_groups(choose)
            top_idx = choose.topk(self.top_k, dim=-1).indices  # (N, k)
            top_weight = scores.gather(-1, top_idx)  # (N, k)
            if self.normalize_top_k:
                top_weight = top_weight / top_weight.sum(dim=-1, keepdim=True).clamp_min(1e-20)
            if self.route_scale != 1.0:
                top_weight = top_weight * self.route_scale
        return Routing(logits=logits, scores=scores, top_idx=top_idx, top_weight=top_weight)

    def _limit_groups(self, choose: Tensor) -> Tensor:
        """``choose (N, E)`` with the experts outside each token's best groups set to -inf."""
        n = choose.shape[0]
        grouped = choose.view(n, self.n_groups, -1)  # (N, G, E/G)
        group_score = grouped.topk(2, dim=-1).values.sum(dim=-1)  # (N, G)
        keep = group_score.topk(self.top_groups, dim=-1).indices  # (N, top_groups)
        allowed = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
        return grouped.masked_fill(~allowed.unsqueeze(-1), float("-inf")).view(n, -1)
