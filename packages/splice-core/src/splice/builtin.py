"""splice-core's own components, registered through the same hooks as any plugin.

Factories are ``"module:attr"`` strings so loading this module imports no torch.
"""

from __future__ import annotations

from typing import Any

from splice.data.configs import (
    ArithmeticTaskConfig,
    JsonlTaskConfig,
    MixtureTaskConfig,
    NumberWordsTaskConfig,
)
from splice.hookspecs import hookimpl
from splice.models.configs import DecoderConfig, EncoderDecoderConfig, PretrainedModelConfig
from splice.nn import configs as c
from splice.objectives.configs import SFTConfig, WeightedSumConfig
from splice.rewards import configs as rw
from splice.rl.configs import ClippedTokenLossConfig, GAEConfig


@hookimpl
def register_norms(register: Any) -> None:
    register(c.LayerNormConfig, "splice.nn.norms:build_layernorm")
    register(c.RMSNormConfig, "splice.nn.norms:build_rmsnorm")


@hookimpl
def register_positional_encodings(register: Any) -> None:
    register(c.NoPositionalConfig, "splice.nn.positional:build_none")
    register(c.SinusoidalPositionalConfig, "splice.nn.positional:build_sinusoidal")
    register(c.LearnedPositionalConfig, "splice.nn.positional:build_learned")
    register(c.RoPEConfig, "splice.nn.positional:build_rope")


@hookimpl
def register_channel_mixers(register: Any) -> None:
    register(c.MLPConfig, "splice.nn.ffn:build_mlp")
    register(c.SwiGLUConfig, "splice.nn.ffn:build_swiglu")


@hookimpl
def register_blocks(register: Any) -> None:
    register(c.PreNormBlockConfig, "splice.nn.blocks:build_pre_norm")
    register(c.PostNormBlockConfig, "splice.nn.blocks:build_post_norm")
    register(c.ParallelBlockConfig, "splice.nn.blocks:build_parallel")


@hookimpl
def register_models(register: Any) -> None:
    register(DecoderConfig, "splice.models.decoder:build_decoder")
    register(EncoderDecoderConfig, "splice.models.encoder_decoder:build_encoder_decoder")
    register(PretrainedModelConfig, "splice.hf.loading:build_pretrained")


@hookimpl
def register_objectives(register: Any) -> None:
    register(SFTConfig, "splice.objectives.sft:build_sft")
    register(WeightedSumConfig, "splice.objectives.composite:build_weighted_sum")


@hookimpl
def register_tasks(register: Any) -> None:
    register(ArithmeticTaskConfig, "splice.data.tasks:build_arithmetic")
    register(JsonlTaskConfig, "splice.data.tasks:build_jsonl")
    register(MixtureTaskConfig, "splice.data.tasks:build_mixture")
    register(NumberWordsTaskConfig, "splice.data.translation:build_number_words")


@hookimpl
def register_rewards(register: Any) -> None:
    register(rw.AnswerMatchRewardConfig, "splice.rewards.verifiers:build_answer_match")
    register(rw.FormatRewardConfig, "splice.rewards.verifiers:build_format")
    register(rw.LengthPenaltyRewardConfig, "splice.rewards.verifiers:build_length_penalty")
    register(rw.CallableRewardConfig, "splice.rewards.callable:build_callable")


@hookimpl
def register_advantage_estimators(register: Any) -> None:
    register(GAEConfig, "splice.rl.estimators:build_gae")


@hookimpl
def register_policy_losses(register: Any) -> None:
    register(ClippedTokenLossConfig, "splice.rl.policy_losses:build_clipped_token")
