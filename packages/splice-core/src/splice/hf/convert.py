"""Pick the architecture of a checkpoint (by ``model_type``) or of a splice config (by shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splice.hf.architecture import Architecture
from splice.hf.gpt2 import GPT2
from splice.hf.llama import LLAMA, QWEN2
from splice.hf.safetensors_io import CheckpointError
from splice.models.configs import DecoderConfig

ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (LLAMA, QWEN2, GPT2)}


def all_architectures() -> dict[str, Architecture]:
    """The built-in architectures plus those plugins register (``register_hf_architectures``)."""
    from splice.registry import get_registry

    found = dict(ARCHITECTURES)
    for reg in get_registry().registrations("hf_architecture"):
        found.setdefault(reg.tag, reg.resolve_factory()())
    return found


def architecture_for(model_type: str) -> Architecture:
    """The architecture registered for ``model_type`` (built in, or by a plugin).

    Raises:
        CheckpointError: the type is not supported (names it and the supported ones).
    """
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    known = all_architectures()
    if model_type not in known:
        raise CheckpointError(
            f"config.json: unsupported model_type {model_type!r}; supported: {sorted(known)}"
        )
    return known[model_type]


def config_from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """The splice ``DecoderConfig`` of a Hugging Face ``config.json`` dict."""
    if "model_type" not in hf:
        raise CheckpointError("config.json: required field 'model_type' is missing")
    return architecture_for(str(hf["model_type"])).config_to_splice(hf)


def architecture_of(cfg: DecoderConfig, model_type: str | None = None) -> Architecture:
    """The architecture ``cfg`` can be exported as: ``model_type`` if given, else the first
    that fits (Llama, Qwen2, GPT-2).

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
