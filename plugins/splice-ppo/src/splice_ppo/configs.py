"""The PPO objective's config (torch-free, so loading the plugin stays light)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator
from splice.config import AdvantageEstimatorField, ComponentConfig, PolicyLossField
from splice.rewards.configs import RewardTermConfig
from splice.rl.configs import ClippedTokenLossConfig, GAEConfig


class PPOConfig(ComponentConfig):
    """PPO for language models (Schulman et al., 2017; Ziegler et al., 2019).

    Per rollout: generate, score with ``rewards``, fold a per-token KL penalty to the
    reference into the reward, estimate advantages (``advantage``, GAE by default), then run
    ``epochs`` passes of policy (``policy_loss``, the clipped surrogate by default) + value
    updates over minibatches of the rollout. Both are registered kinds built through the
    registry, so a third-party estimator or policy loss replaces them by tag.

    Attributes:
        rewards: the weighted reward terms (``splice.rewards``) that score each completion.
        samples_per_prompt: completions generated per prompt in each rollout.
        critic: ``"shared"`` (a value head on the policy's final hidden states; the value
            loss also trains the trunk) or ``"separate"`` (a copy of the policy as the critic's
            trunk, with its own head; twice the weights, no interference with the policy).
        value_head_dropout: dropout before the value head's projection.
        value_lr_scale: the critic's learning rate as a multiple of the policy's (RL policies
            train at small rates; a zero-initialised head learns little at the same rate).
        gamma: discount ``γ`` of GAE (1.0: no discount within a completion); also the
            discount of the critic's targets when ``advantage`` gives no returns.
        lam: GAE's ``λ`` (bias/variance trade-off of the advantage).
        clip: policy ratio clip ``ε``: the ratio is clipped to ``[1 - ε, 1 + ε]``.
        advantage: a registered advantage estimator (``splice.rl.kinds``); None (default):
            ``{"type": "gae", "gamma": gamma, "lam": lam}``. An estimator with one advantage
            per completion (``group_norm`` with ``samples_per_prompt >= 2``) applies it to
            every token; one without returns trains the critic on the discounted return.
            When set, ``lam`` (and, for ``gae``, ``gamma``) must stay at their defaults:
            configure the estimator itself.
        policy_loss: a registered policy loss; None (default):
            ``{"type": "clipped_token", "epsilon": clip}``. When set, ``clip`` must stay at
            its default.
        value_clip: value clip ``ε_v`` around the rollout's values (None: unclipped).
        vf_coef: weight of the value loss in ``policy_loss + vf_coef * value_loss``.
        entropy_coef: weight of an entropy bonus (subtracted from the loss); 0 = none.
        kl_coef: initial ``β`` of the per-token KL penalty ``-β kl_t``; 0 skips the reference.
        kl_estimator: ``"k1"`` (``log π - log π_ref``) or ``"k3"`` (non-negative).
        kl_target: adapt ``β`` toward this per-sequence KL (Ziegler's controller); None: fixed.
        kl_horizon: the adaptive controller's horizon (in sequences).
        whiten_advantages: normalise advantages to mean 0, std 1 over each rollout's tokens.
        whiten_rewards: scale the shaped rewards to unit std (mean kept) before GAE.
        epochs: passes over each rollout.
        minibatch_size: completions per optimizer update (None: the whole rollout).
        target_kl: stop a rollout's remaining updates once a minibatch's approximate
            KL to the rollout policy exceeds this (None: never stop early).
        reference: the reference model: ``"auto"`` (adapters off for LoRA policies, else a
            frozen copy), ``"adapters_off"`` or ``"copy"``.
        seed: seeds the order in which each rollout's minibatches are drawn.
    """

    type: Literal["ppo"] = "ppo"
    rewards: list[RewardTermConfig] = Field(min_length=1)
    samples_per_prompt: PositiveInt = 1
    critic: Literal["shared", "separate"] = "shared"
    value_head_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    value_lr_scale: PositiveFloat = 1.0
    gamma: float = Field(default=1.0, ge=0.0, le=1.0)
    lam: float = Field(default=0.95, ge=0.0, le=1.0)
    clip: PositiveFloat = 0.2
    value_clip: PositiveFloat | None = 0.2
    vf_coef: NonNegativeFloat = 0.1
    entropy_coef: NonNegativeFloat = 0.0
    kl_coef: NonNegativeFloat = 0.05
    kl_estimator: Literal["k1", "k3"] = "k1"
    kl_target: PositiveFloat | None = None
    kl_horizon: PositiveInt = 10_000
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    epochs: PositiveInt = 4
    minibatch_size: PositiveInt | None = None
    target_kl: PositiveFloat | None = None
    reference: Literal["auto", "adapters_off", "copy"] = "auto"
    seed: int = 0
    advantage: AdvantageEstimatorField | None = None  # type: ignore[valid-type]
    policy_loss: PolicyLossField | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _flat_fields_configure_the_defaults(self) -> PPOConfig:
        # gamma/lam/clip are the settings of the default components; with a component given
        # explicitly they would be silently ignored, so a changed one is refused instead
        # (gamma still discounts the critic's targets of an estimator without returns).
        ignored = [("lam", self.advantage), ("clip", self.policy_loss)]
        if self.advantage is not None and self.advantage.type == "gae":
            ignored.append(("gamma", self.advantage))
        for field, component in ignored:
            default = type(self).model_fields[field].default
            if component is not None and getattr(self, field) != default:
                raise ValueError(
                    f"{field}={getattr(self, field)} with {component.type!r} given explicitly: "
                    f"{field} only configures the default component; set it inside the "
                    "component's config instead"
                )
        return self

    def advantage_config(self) -> Any:
        """The estimator to build: ``advantage``, else GAE with ``gamma`` and ``lam``."""
        return self.advantage or GAEConfig(gamma=self.gamma, lam=self.lam)

    def policy_loss_config(self) -> Any:
        """The policy loss to build: ``policy_loss``, else the clipped surrogate with ``clip``."""
        return self.policy_loss or ClippedTokenLossConfig(epsilon=self.clip)


__all__ = ["PPOConfig"]
