"""What one Hugging Face architecture must say to be imported and exported.

An ``Architecture`` maps a ``config.json`` to a splice ``DecoderConfig`` and back,
and a state dict in Hugging Face tensor names to splice module names and back.
Plugins register them (``register_hf_architectures``); ``splice.hf.all_architectures()``
lists the installed ones by ``model_type``. The helpers below are the layout parts every
architecture shares.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from torch import Tensor

from splice.hf.safetensors_io import CheckpointError
from splice.models.configs import DecoderConfig


class Architecture(Protocol):
    """Config and weight mapping of one Hugging Face ``model_type``."""

    model_type: str
    hf_class: str  # e.g. "LlamaForCausalLM", written to ``architectures`` on export

    def config_to_splice(self, hf: Mapping[str, Any]) -> DecoderConfig:
        """Raises CheckpointError naming the ``config.json`` field splice cannot represent."""

    def config_to_hf(self, cfg: DecoderConfig) -> dict[str, Any]: ...

    def export_problems(self, cfg: DecoderConfig) -> list[str]:
        """Why ``cfg`` cannot be written as this architecture (empty: it can)."""

    def canonical_name(self, name: str, cfg: DecoderConfig) -> str | None:
        """The checkpoint tensor ``name`` as ``weights_to_hf`` spells it; None to ignore it
        (non-persistent buffers some checkpoints carry, a duplicate tied head)."""

    def weights_to_splice(
        self, hf: Mapping[str, Tensor], cfg: DecoderConfig
    ) -> dict[str, Tensor]: ...

    def weights_to_hf(
        self, state: Mapping[str, Tensor], cfg: DecoderConfig
    ) -> dict[str, Tensor]: ...


def layout_problems(cfg: DecoderConfig, *, norm: str, positional: str) -> list[str]:
    """What keeps ``cfg`` from the layout every supported HF decoder shares.

    One pre-norm block for all layers, no cross-attention, ``norm`` (e.g. ``"rmsnorm"``)
    in the blocks and at the end with one eps, and ``positional`` positions. Each
    architecture adds its own attention / FFN checks.
    """
    problems = []
    blk = cfg.block
    if cfg.overrides:
        problems.append("overrides: per-layer blocks have no Hugging Face equivalent")
    if blk.type != "pre_norm":
        problems.append(f"block.type={blk.type!r}, expected 'pre_norm'")
    for field, n in (("block.norm", blk.norm), ("final_norm", cfg.final_norm)):
        if n.type != norm:
            problems.append(f"{field}.type={n.type!r}, expected {norm!r}")
    if blk.norm.type == cfg.final_norm.type == norm and blk.norm.eps != cfg.final_norm.eps:
        problems.append("final_norm.eps differs from block.norm.eps (the checkpoint has one eps)")
    if cfg.positional.type != positional:
        problems.append(f"positional.type={cfg.positional.type!r}, expected {positional!r}")
    if blk.cross_attention is not None:
        problems.append("block.cross_attention: not part of a decoder-only checkpoint")
    return problems


def unsupported(field: str, value: Any, expected: str) -> CheckpointError:
    """The error for a ``config.json`` field whose value splice does not implement."""
    return CheckpointError(f"config.json: {field}={value!r} is not supported (expected {expected})")


def require(hf: Mapping[str, Any], field: str) -> Any:
    if field not in hf or hf[field] is None:
        raise CheckpointError(f"config.json: required field {field!r} is missing")
    return hf[field]


def rope_theta(hf: Mapping[str, Any]) -> float:
    """RoPE base from either config style: ``rope_parameters`` (transformers 5) or the older
    top-level ``rope_theta`` + ``rope_scaling``. Scaled RoPE variants are rejected."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for field, spec in (("rope_parameters", params), ("rope_scaling", scaling)):
        kind = spec.get("rope_type", spec.get("type", "default"))
        if kind != "default":
            raise unsupported(f"{field}.rope_type", kind, "'default' (no RoPE scaling)")
        factor = spec.get("partial_rotary_factor", 1.0)
        if factor != 1.0:
            raise unsupported(f"{field}.partial_rotary_factor", factor, "1.0")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        raise unsupported("partial_rotary_factor", hf["partial_rotary_factor"], "1.0")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


class Renamer:
    """Bidirectional prefix renaming, e.g. ``model.layers.{i}.mlp.up_proj.`` <-> ``blocks.{i}.ffn.up.``."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._fwd = [(self._regex(a), b) for a, b in pairs]
        self._bwd = [(self._regex(b), a) for a, b in pairs]

    @staticmethod
    def _regex(prefix: str) -> re.Pattern[str]:
        return re.compile("^" + re.escape(prefix).replace(r"\{i\}", r"(?P<i>\d+)"))

    @staticmethod
    def _apply(rules: list[tuple[re.Pattern[str], str]], name: str) -> str | None:
        for pattern, target in rules:
            m = pattern.match(name)
            if m:
                return target.format(i=m.groupdict().get("i")) + name[m.end() :]
        return None

    def to_splice(self, hf_name: str) -> str | None:
        return self._apply(self._fwd, hf_name)

    def to_hf(self, splice_name: str) -> str | None:
        return self._apply(self._bwd, splice_name)
