"""The PPO objective's config (torch-free, so loading the plugin stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from splice.config import ComponentConfig
from splice.rewards.configs import RewardTermConfig


class PPOConfig(ComponentConfig):
    """PPO for language models (Schulman et al., 2017; Ziegler et al., 2019).

    Per rollout: generate, score with ``rewards``, fold a per-token KL penalty to the
    reference into the reward, estimate advantages with GAE, then run ``epochs`` passes
    of clipped policy + value updates over minibatches of the rollout.

    Attributes:
        rewards: the weighted reward terms (``splice.rewards``) that score each completion.
        samples_per_prompt: completions generated per prompt in each rollout.
        critic: ``"shared"`` (a value head on the policy's final hidden states; the value
            loss also trains the trunk) or ``"separate"`` (a copy of the policy as the critic's
            trunk, with its own head; twice the weights, no interference with the policy).
        value_head_dropout: dropout before the value head's projection.
        value_lr_scale: the critic's learning rate as a multiple of the policy's (RL policies
            train at small rates; a zero-initialised head learns little at the same rate).
        gamma: discount ``γ`` of GAE (1.0: no discount within a completion).
        lam: GAE's ``λ`` (bias/variance trade-off of the advantage).
        clip: policy ratio clip ``ε``: the ratio is clipped to ``[1 - ε, 1 + ε]``.
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


__all__ = ["PPOConfig"]
