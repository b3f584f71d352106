"""Modality-isolated experts (ERNIE 4.5's heterogeneous MoE) and the report's router terms.

With ``modality_experts=[n_text, n_image]`` the routed experts are split in order: the first
``n_text`` serve text tokens only, the next ``n_image`` image tokens only; the shared experts
serve both. A token's router scores are computed over its own modality's experts (the
others are masked before the softmax and the top-k), so no text token ever reaches an
image expert and vice versa. The per-token ids come from ``splice.nn.modality`` (set by the
VLM around its LM call; none set means all text).

- ``modality_balance_loss``: the Switch/GShard balancing loss within each modality (its
  tokens over its experts), summed over the modalities present, so balancing one modality
  never pushes its tokens toward the other's experts.
- ``router_orthogonal_loss``: ``|| W_n W_n^T - I ||_F^2 / E^2`` of the row-normalised router
  weight ``W_n (E, D)``: it pushes the experts' router directions apart, so experts
  specialise (ERNIE 4.5's router orthogonalization loss).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from splice_moe.balancing import load_balancing_loss


def expert_modality(modality_experts: list[int], device: torch.device) -> Tensor:
    """``(E,)`` the modality each routed expert serves."""
    sizes = torch.tensor(modality_experts, device=device)
    return torch.repeat_interleave(torch.arange(len(modality_experts), device=device), sizes)


def allowed_experts(token_modality: Tensor, modality_experts: list[int]) -> Tensor:
    """``(N, E)`` bool: expert ``e`` may take token ``n`` (same modality).

    Raises:
        ValueError: a token's modality id has no experts (names the id and the split).
    """
    n_mod = len(modality_experts)
    if token_modality.numel() and int(token_modality.max()) >= n_mod:
        raise ValueError(
            f"token modality {int(token_modality.max())} has no experts: modality_experts="
            f"{modality_experts} covers modalities 0..{n_mod - 1}"
        )
    owner = expert_modality(modality_experts, token_modality.device)  # (E,)
    return token_modality.reshape(-1, 1) == owner  # (N, E)


def modality_balance_loss(
    scores: Tensor,
    top_idx: Tensor,
    token_modality: Tensor,
    modality_experts: list[int],
    *,
    normalize: bool,
) -> Tensor:
    """Sum over modalities of the balancing loss of its tokens over its experts.

    Args:
        scores: ``(N, E)`` router scores (zero outside a token's modality).
        top_idx: ``(N, k)`` chosen experts.
        token_modality: ``(N,)`` modality ids.
    """
    total = scores.new_zeros(())
    start = 0
    for m, size in enumerate(modality_experts):
        rows = token_modality.reshape(-1) == m
        if bool(rows.any()):
            s = scores[rows, start : start + size]  # (N_m, E_m)
            routed = torch.bincount(top_idx[rows].flatten() - start, minlength=size)
            total = total + load_balancing_loss(s, routed[:size], normalize=normalize)
        start += size
    return total


def router_orthogonal_loss(weight: Tensor) -> Tensor:
    """``|| W_n W_n^T - I ||_F^2 / E^2`` of the router weight ``(E, D)``, rows unit-normalised."""
    w = F.normalize(weight.float(), dim=-1)
    gram = w @ w.T  # (E, E)
    eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
    return (gram - eye).square().sum() / gram.numel()
