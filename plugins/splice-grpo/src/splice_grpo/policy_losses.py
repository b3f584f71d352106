"""Policy-gradient losses (kind ``policy_loss``): per-token losses from log-prob ratios.

A policy loss is called as ``loss(PolicyLossInputs) -> PolicyLossOutput``
(``splice.rl.kinds``): ``logprobs`` ``(N, L)`` of the current policy (with gradient),
``old_logprobs`` ``(N, L)`` of the rollout policy, ``advantages`` ``(N,)`` (one per
completion; ``(N, L)`` per token from a critic-based estimator) and ``mask`` ``(N, L)``. It
returns ``per_token (N, L)`` losses and metrics; the objective adds the KL term and
aggregates. The 0.1 call ``loss(logprobs, old_logprobs, advantages, mask)`` still works with
a ``DeprecationWarning``.

The token-level clipped loss (``clipped_token``) is the core's, shared with PPO
(``splice.rl.policy_losses``; importable from here too); this plugin adds GSPO.
"""

from __future__ import annotations

from splice.rl.kinds import PolicyLossInputs, PolicyLossOutput, TokenPolicyLoss
from splice.rl.policy_losses import ClippedTokenLoss, build_clipped_token
from splice.rl.policy_losses import clipped_loss as clipped_surrogate

from splice_grpo.configs import GSPOLossConfig


class SequenceRatioLoss(TokenPolicyLoss):
    """GSPO: the ratio of a whole sequence, length-normalised:
    ``s_i = exp(mean_t(log π(y_t) - log π_old(y_t)))``, clipped per sequence.

    Implemented in the "GSPO-token" form: token ``t`` gets the ratio
    ``sg(s_i) * π(y_t) / sg(π(y_t))``, whose value is ``s_i`` and whose gradient is
    ``s_i ∇log π(y_t)``, so a per-sequence token mean gives GSPO's gradient
    ``s_i * mean_t ∇log π(y_t)`` exactly.
    """

    def __init__(self, *, epsilon: float = 3e-4, epsilon_high: float | None = 4e-4) -> None:
        self.eps_low = epsilon
        self.eps_high = epsilon if epsilon_high is None else epsilon_high

    def compute(self, inputs: PolicyLossInputs) -> PolicyLossOutput:
        logprobs, mask = inputs.logprobs, inputs.mask
        m = mask.to(logprobs.dtype)
        lengths = m.sum(-1).clamp(min=1)  # (N,)
        log_s = ((logprobs - inputs.old_logprobs) * m).sum(-1) / lengths  # (N,)
        log_ratio = log_s.detach()[:, None] + logprobs - logprobs.detach()  # (N, L)
        return clipped_surrogate(log_ratio, inputs.advantages, mask, self.eps_low, self.eps_high)


def build_gspo(config: GSPOLossConfig, ctx: object = None) -> SequenceRatioLoss:
    return SequenceRatioLoss(epsilon=config.epsilon, epsilon_high=config.epsilon_high)


__all__ = [
    "ClippedTokenLoss",
    "PolicyLossOutput",
    "SequenceRatioLoss",
    "build_clipped_token",
    "clipped_surrogate",
]
