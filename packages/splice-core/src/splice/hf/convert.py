"""Pick the architecture of a checkpoint (by ``model_type``) or of a splice config (by shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splice.hf.architecture import Architecture
from splice.hf.safetensors_io import CheckpointError
from splice.models.configs import DecoderConfig


def all_architectures() -> dict[str, Architecture]:
    """Every layout the installed plugins register (``register_hf_architectures``), by
    ``model_type``: Llama, Qwen2 and GPT-2 come with splice-mha, Mixtral with splice-moe.
    The core has none of its own: each layout names its attention's config."""
    from splice.registry import get_registry

    return {
        reg.tag: reg.resolve_factory()() for reg in get_registry().registrations("hf_architecture")
    }


def architecture_for(model_type: str) -> Architecture:
    """The architecture registered for ``model_type`` (built in, or by a plugin).

    Raises:
        CheckpointError: the type is not supported (names it and the supported ones).
    """
    from splice import install_advice
    from splice.registry import INSTALL_HINTS, get_registry

    regs = {r.tag: r for r in get_registry().registrations("hf_architecture")}
    if model_type not in regs:
        provider = INSTALL_HINTS.get("hf_architecture", {}).get(model_type)
        hint = f". {install_advice.install_advice(provider)}" if provider else ""
        raise CheckpointError(
            f"config.json: unsupported model_type {model_type!r}; supported: {sorted(regs)}{hint}"
        )
    arch: Architecture = regs[model_type].resolve_factory()()
    return arch


def config_from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """The splice ``DecoderConfig`` of a Hugging Face ``config.json`` dict."""
    if "model_type" not in hf:
        raise CheckpointError("config.json: required field 'model_type' is missing")
    return architecture_for(str(hf["model_type"])).config_to_splice(hf)


def architecture_of(cfg: DecoderConfig, model_type: str | None = None) -> Architecture:
    """The architecture ``cfg`` can be exported as: ``model_type`` if given, else the first
    that fits (in registration order: splice-mha's Llama, Qwen2, GPT-2, then other plugins').

    Raises:
        ValueError: no architecture (or not the requested one) can represent ``cfg``; the
            message lists the config fields in the way.
    """
    candidates = (
        [architecture_for(model_type)] if model_type else list(all_architectures().values())
    )
    reasons = []
    for arch in candidates:
        problems = arch.export_problems(cfg)
        if not problems:
            return arch
        reasons.append(f"{arch.model_type}: {'; '.join(problems)}")
    raise ValueError(
        "this model cannot be written as a Hugging Face checkpoint:\n  " + "\n  ".join(reasons)
    )
