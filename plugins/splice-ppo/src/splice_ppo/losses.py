"""PPO's value loss, per completion token (``(B, L)`` + mask), and the deprecated policy loss.

Token-level means: every generated token of the minibatch weighs the same, as in
OpenAI's ``lm-human-preferences`` and TRL's ``PPOTrainer``. The policy loss is the
registered ``clipped_token`` (``splice.rl.policy_losses``, shared with GRPO), which the
objective builds from ``PPOConfig.policy_loss_config()``; ``clipped_policy_loss`` here is
its 0.1 spelling, kept with a ``DeprecationWarning`` until splice-ppo 0.3.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from splice.deprecation import warn_deprecated
from splice.rl.kinds import PolicyLossInputs
from splice.rl.policy_losses import ClippedTokenLoss
from splice.rl.stats import masked_mean
from torch import Tensor


@dataclass
class PolicyLoss:
    """The clipped surrogate and what it measured.

    Attributes:
        loss: scalar ``mean_t max(-A_t r_t, -A_t clip(r_t, 1-ε, 1+ε))``.
        clip_fraction: share of tokens where the clipped term was the larger (active).
        approx_kl: ``mean_t 0.5 (log π - log π_old)^2``, an estimate of KL(π_old || π).
        ratio_mean: mean importance ratio ``r_t = π / π_old`` (1 on a fresh rollout).
    """

    loss: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


@dataclass
class ValueLoss:
    """The clipped value loss and its clip fraction.

    Attributes:
        loss: scalar ``0.5 mean_t max((V - R)^2, (V_old + clip(V - V_old, -ε_v, ε_v) - R)^2)``.
        clip_fraction: share of tokens where the clipped error was the larger.
    """

    loss: Tensor
    clip_fraction: Tensor


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *, clip: float
) -> PolicyLoss:
    """PPO-clip (Schulman et al., 2017) per token, averaged over the mask (deprecated).

    Deprecated: build the registered ``clipped_token`` policy loss
    (``splice.rl.policy_losses.ClippedTokenLoss(epsilon=clip)``) and take
    ``masked_mean(out.per_token, mask)``, as ``PPOObjective`` does.

    Args:
        logprobs: ``(B, L)`` log π(a_t | s_t) under the policy being trained (with grad).
        old_logprobs: ``(B, L)`` the same under the rollout policy (no grad).
        advantages: ``(B, L)`` (whitened) advantages ``A_t``.
        mask: ``(B, L)`` bool, the generated tokens.
        clip: ``ε``; the ratio is clipped to ``[1 - ε, 1 + ε]``.
    """
    warn_deprecated(
        "splice_ppo.losses.clipped_policy_loss",
        "the registered policy loss 'clipped_token' (splice.rl.policy_losses.ClippedTokenLoss)",
        removed_in="splice-ppo 0.3.0",
    )
    out = ClippedTokenLoss(epsilon=clip)(PolicyLossInputs(logprobs, old_logprobs, advantages, mask))
    loss = masked_mean(out.per_token, mask)
    with torch.no_grad():
        approx_kl = masked_mean(0.5 * (logprobs.detach() - old_logprobs) ** 2, mask)
        ratio_mean = masked_mean(torch.exp(logprobs.detach() - old_logprobs), mask)
    return PolicyLoss(loss, out.metrics["clip_fraction"], approx_kl, ratio_mean)


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip: float | None
) -> ValueLoss:
    """The value regression, clipped around the rollout's values like the policy ratio.

    Args:
        values: ``(B, L)`` predictions of the value head being trained (with grad).
        old_values: ``(B, L)`` the rollout's predictions (no grad).
        returns: ``(B, L)`` GAE returns ``A_t + V_old(s_t)`` (targets).
        mask: ``(B, L)`` bool, the generated tokens.
        clip: ``ε_v``; None for the plain squared error ``0.5 (V - R)^2``.
    """
    err = (values - returns) ** 2
    if clip is None:
        return ValueLoss(0.5 * masked_mean(err, mask), torch.zeros((), device=values.device))
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((err_clipped > err).float(), mask)
    return ValueLoss(loss, clip_fraction)


__all__ = ["PolicyLoss", "ValueLoss", "clipped_policy_loss", "clipped_value_loss"]
