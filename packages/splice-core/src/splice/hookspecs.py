"""The hooks a splice plugin implements (pluggy project ``splice``).

Each hook receives a ``register`` callable. A plugin calls it once per
component: ``register(ConfigClass, factory)`` where ``ConfigClass`` is a
pydantic model with ``type: Literal["<tag>"]`` and ``factory`` is a callable
``factory(config, ctx) -> object`` or a lazy ``"module:attribute"`` string,
so that loading the plugin does not import torch. Recipes register
``register(name, builder)`` with ``builder() -> ExperimentConfig`` (also
callable or ``"module:attribute"``).
"""

from __future__ import annotations

from typing import Any

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("splice")
hookimpl = HookimplMarker("splice")


@hookspec
def register_token_mixers(register: Any) -> None:
    """Register attention-like layers (TokenMixer)."""


@hookspec
def register_channel_mixers(register: Any) -> None:
    """Register FFN-like layers (ChannelMixer)."""


@hookspec
def register_blocks(register: Any) -> None:
    """Register transformer blocks (Block)."""


@hookspec
def register_norms(register: Any) -> None:
    """Register normalisation layers."""


@hookspec
def register_positional_encodings(register: Any) -> None:
    """Register positional encodings (sinusoidal, learned, RoPE, ...)."""


@hookspec
def register_models(register: Any) -> None:
    """Register model families (decoder-only, encoder-decoder, vision-language)."""


@hookspec
def register_adapters(register: Any) -> None:
    """Register adapters that wrap modules of a built model (Adapter)."""


@hookspec
def register_quantizers(register: Any) -> None:
    """Register weight quantizers (Quantizer)."""


@hookspec
def register_objectives(register: Any) -> None:
    """Register training objectives (Objective)."""


@hookspec
def register_regularizers(register: Any) -> None:
    """Register loss terms added to any objective (Regularizer)."""


@hookspec
def register_connectors(register: Any) -> None:
    """Register encoder-to-language-model connectors (Connector)."""


@hookspec
def register_encoders(register: Any) -> None:
    """Register non-text encoders (e.g. ViT) that feed a Connector."""


@hookspec
def register_rewards(register: Any) -> None:
    """Register reward functions (Reward)."""


@hookspec
def register_preference_losses(register: Any) -> None:
    """Register DPO-style preference losses: ``register(ConfigClass, loss_fn)`` where
    ``loss_fn(logps, config) -> (B,)`` per-pair losses (used by splice-dpo's ``dpo`` objective)."""


@hookspec
def register_advantage_estimators(register: Any) -> None:
    """Register RL advantage estimators (group-normalised, RLOO, GAE, ...)."""


@hookspec
def register_policy_losses(register: Any) -> None:
    """Register RL policy-gradient losses (clipped token-level, sequence-level GSPO, ...)."""


@hookspec
def register_retrievers(register: Any) -> None:
    """Register passage retrievers for retrieval-augmented tasks (BM25, dense, hybrid, ...)."""


@hookspec
def register_tasks(register: Any) -> None:
    """Register datasets / task generators."""


@hookspec
def register_hf_architectures(register: Any) -> None:
    """Register Hugging Face checkpoint layouts: ``register(model_type, "module:factory")``,
    ``factory() -> splice.hf.architecture.Architecture``."""


@hookspec
def register_recipes(register: Any) -> None:
    """Register runnable recipes: ``register(name, builder)``."""
