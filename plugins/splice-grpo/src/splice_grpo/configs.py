"""Configs of splice-grpo's components (torch-free, so the registry loads them cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator
from splice.config import AdvantageEstimatorField, ComponentConfig, PolicyLossField
from splice.rewards import RewardTermConfig

# The token-level clipped loss is registered by the core (shared with PPO); importable here too.
from splice.rl.configs import ClippedTokenLossConfig


# --------------------------------------------------------------------------- advantages
class GroupNormConfig(ComponentConfig):
    """GRPO's advantage: ``(r - mean(group)) / (std(group) + eps)``.

    Attributes:
        scale_by_std: divide by the group's standard deviation; ``False`` is Dr. GRPO, which
            argues the division over-weights groups whose rewards barely differ.
        eps: added to the std (a group of equal rewards has std 0).
    """

    type: Literal["group_norm"] = "group_norm"
    scale_by_std: bool = True
    eps: PositiveFloat = 1e-4


class RLOOConfig(ComponentConfig):
    """REINFORCE leave-one-out: ``r_i - mean(r_j, j != i)`` over the group."""

    type: Literal["rloo"] = "rloo"


class ReinforcePPConfig(ComponentConfig):
    """REINFORCE++: ``(r - mean(batch)) / (std(batch) + eps)`` over the whole batch.

    Attributes:
        group_baseline: subtract the group mean before normalising over the batch
            (the "REINFORCE++-baseline" variant).
    """

    type: Literal["reinforce_pp"] = "reinforce_pp"
    group_baseline: bool = False
    eps: PositiveFloat = 1e-8


# --------------------------------------------------------------------------- policy losses
class GSPOLossConfig(ComponentConfig):
    """GSPO: one importance ratio per sequence, ``s = exp(mean_t(log π - log π_old))``,
    clipped as a whole: ``-min(s A, clip(s, 1-ε, 1+ε_high) A)``.

    The GSPO paper's ranges are far tighter than token-level ones (3e-4 / 4e-4).
    """

    type: Literal["gspo"] = "gspo"
    epsilon: PositiveFloat = 3e-4
    epsilon_high: PositiveFloat | None = 4e-4


# --------------------------------------------------------------------------- objective
class GRPOConfig(ComponentConfig):
    """Group Relative Policy Optimisation (an online objective).

    Each step: every prompt is continued ``group_size`` times; ``rewards`` score the
    completions; ``advantage`` turns rewards into per-completion advantages; the policy is
    updated ``inner_iterations`` times on the batch (split into ``minibatches``) with
    ``policy_loss`` plus ``beta`` times the k3 KL estimate to the reference model.

    Attributes:
        group_size: completions per prompt ``G`` (>= 2: the baseline is the group's mean).
        rewards: the weighted rule-based rewards (``splice.rewards``).
        advantage: a registered advantage estimator (``group_norm``, ``rloo``, ``reinforce_pp``).
        policy_loss: a registered policy loss (``clipped_token`` from the core, ``gspo``; ``gspo`` takes
            ``loss_aggregation="grpo"`` only, the paper's per-sequence mean).
        beta: weight of the KL penalty ``k3 = exp(q) - q - 1``, ``q = log π_ref - log π``;
            0 skips the reference model entirely.
        loss_aggregation: ``"grpo"`` (mean over tokens of each sequence, then over sequences),
            ``"dr_grpo"`` (sum over all tokens / (sequences * max_new_tokens), a constant
            normaliser) or ``"token"`` (mean over all tokens of the batch, DAPO).
        inner_iterations: updates per minibatch per rollout (μ); log-probs of the rollout
            policy are stored so the ratio is exact on the first one.
        minibatches: the rollout is split into this many minibatches (whole groups each),
            one optimizer update per minibatch per inner iteration.
        filter_equal_groups: drop groups whose rewards are all equal from the loss (DAPO's
            dynamic sampling, without resampling): they carry no group-relative signal.
            Their share is always logged as ``equal_reward_groups``.
        reference: how the reference is made (``splice.rl.reference.ReferenceModel``).
        max_new_tokens: the ``dr_grpo`` normaliser; None uses the generated width.
    """

    type: Literal["grpo"] = "grpo"
    group_size: int = Field(default=8, ge=2)
    rewards: list[RewardTermConfig] = Field(min_length=1)
    advantage: AdvantageEstimatorField = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"type": "group_norm"}, validate_default=True
    )
    policy_loss: PolicyLossField = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"type": "clipped_token"}, validate_default=True
    )
    beta: NonNegativeFloat = 0.04
    loss_aggregation: Literal["grpo", "dr_grpo", "token"] = "grpo"
    inner_iterations: PositiveInt = 1
    minibatches: PositiveInt = 1
    filter_equal_groups: bool = False
    reference: Literal["auto", "adapters_off", "copy"] = "auto"
    max_new_tokens: PositiveInt | None = None

    @model_validator(mode="after")
    def _clip_ranges(self) -> GRPOConfig:
        eps = getattr(self.policy_loss, "epsilon", None)
        if isinstance(eps, float) and eps >= 1.0:
            raise ValueError(f"policy_loss.epsilon={eps}: the lower clip 1 - epsilon must be > 0")
        return self

    @model_validator(mode="after")
    def _gspo_is_a_sequence_mean(self) -> GRPOConfig:
        # GSPO's objective is 1/G Σ_i min(s_i A_i, clip(s_i) A_i): each sequence counts once.
        # Its token form equals that only under the per-sequence token mean ("grpo"); a
        # token or dr_grpo mean weighs each sequence by its length, which is not GSPO.
        if self.policy_loss.type == "gspo" and self.loss_aggregation != "grpo":
            raise ValueError(
                f"loss_aggregation={self.loss_aggregation!r} with policy_loss 'gspo': GSPO "
                "averages one clipped ratio per sequence (each sequence counts once), which "
                "only loss_aggregation='grpo' (per-sequence token mean) computes; use 'grpo'"
            )
        return self


__all__ = [
    "ClippedTokenLossConfig",
    "GRPOConfig",
    "GSPOLossConfig",
    "GroupNormConfig",
    "RLOOConfig",
    "ReinforcePPConfig",
]
