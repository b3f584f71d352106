"""Per-token estimates of ``KL(π || π_ref)`` from the sampled tokens' log-probs.

Shapes: any, elementwise (typically ``(B, L)`` completion tokens). With
``q = log π_ref(y) - log π(y)`` at the sampled token ``y`` (Schulman 2020, "Approximating
KL divergence"):

- ``k1 = -q``: unbiased, can be negative per token;
- ``k3 = e^q - 1 - q``: unbiased, always >= 0, lower variance; GRPO's penalty, PPO's
  ``kl_estimator="k3"`` and the forgetting plugin's ``estimator="k3"`` all use this one.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k3"]


def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``log π - log π_ref`` per token."""
    return logprobs - ref_logprobs


def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``e^q - 1 - q`` with ``q = log π_ref - log π`` per token (``expm1``: exact near 0)."""
    q = ref_logprobs - logprobs
    return torch.expm1(q) - q


def token_kl(logprobs: Tensor, ref_logprobs: Tensor, *, estimator: KLEstimator = "k1") -> Tensor:
    """The per-token KL estimate ``estimator`` names.

    Raises:
        ValueError: an unknown estimator.
    """
    if estimator == "k1":
        return k1(logprobs, ref_logprobs)
    if estimator == "k3":
        return k3(logprobs, ref_logprobs)
    raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {estimator!r}")


__all__ = ["KLEstimator", "k1", "k3", "token_kl"]
