"""Load a Hugging Face checkpoint directory into a splice ``DecoderLM``.

Order of work, so that a bad checkpoint fails before any model is returned:
config.json -> splice config -> every safetensors header (shards, truncation) ->
names and shapes against a model built on the meta device -> build the real model
-> read and copy tensors one file at a time -> check every splice tensor was set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from splice.hf.architecture import Architecture
from splice.hf.convert import architecture_for
from splice.hf.safetensors_io import CheckpointError, TensorInfo, read_index, read_tensors
from splice.hf.tokenizer import HFTokenizer
from splice.models.configs import DecoderConfig
from splice.models.decoder import DecoderLM

_SHOWN = 5  # how many offending names an error lists


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory, as a dict."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: not found (a Hugging Face checkpoint needs config.json)")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise CheckpointError(f"{file}: required field 'model_type' is missing")
    return data


def load_config(path: str | Path) -> tuple[Architecture, DecoderConfig]:
    """The architecture and derived splice config of the checkpoint at ``path``."""
    hf = read_hf_config(path)
    arch = architecture_for(str(hf["model_type"]))
    return arch, arch.config_to_splice(hf)


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(repr(n) for n in names[:_SHOWN]) + more


def _match_checkpoint(
    arch: Architecture, cfg: DecoderConfig, infos: dict[str, TensorInfo], directory: Path
) -> dict[str, str]:
    """Check names and shapes; return ``{canonical name: name in the file}`` of what to read."""
    from splice.models.build import build_model

    with torch.device("meta"):  # shapes only: no memory, no init cost
        meta = build_model(cfg)
    expected = {k: tuple(v.shape) for k, v in arch.weights_to_hf(meta.state_dict(), cfg).items()}
    found: dict[str, str] = {}
    for name in infos:
        canonical = arch.canonical_name(name, cfg)
        if canonical is not None:
            found[canonical] = name
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(
            f"{directory}: missing tensor(s) {_names(missing)} for {arch.model_type}"
        )
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{directory}: unexpected tensor(s) {_names(unexpected)}: the {arch.model_type} config "
            f"does not use them (a feature splice does not map?)"
        )
    for canonical, want in expected.items():
        info = infos[found[canonical]]
        if info.shape != want:
            raise CheckpointError(
                f"{info.file}: tensor {found[canonical]!r} has shape {list(info.shape)}, "
                f"expected {list(want)} from config.json"
            )
    return found


def _auto_dtype(infos: dict[str, TensorInfo]) -> torch.dtype:
    floats = [i.dtype for i in infos.values() if i.dtype.is_floating_point]
    return max(set(floats), key=floats.count) if floats else torch.float32


def load_model(
    path: str | Path, *, dtype: torch.dtype | str = "auto", device: torch.device | str = "cpu"
) -> DecoderLM:
    """Build a splice model from a Hugging Face checkpoint directory, in eval mode.

    Args:
        path: directory with ``config.json`` and ``model.safetensors`` (or a sharded
            ``model.safetensors.index.json``).
        dtype: ``"auto"`` keeps the checkpoint's floating dtype; else e.g. ``torch.float32``.
        device: where the returned model lives.

    Raises:
        CheckpointError: unsupported ``model_type`` or config field, missing/truncated file or
            shard, missing/unexpected tensor, wrong shape. Raised before a model exists.
    """
    from splice.models.build import build_model

    directory = Path(path)
    arch, cfg = load_config(directory)
    infos = read_index(directory)
    found = _match_checkpoint(arch, cfg, infos, directory)
    target = _auto_dtype(infos) if dtype == "auto" else dtype
    if isinstance(target, str):
        target = getattr(torch, target)
    model = build_model(cfg).to(device=device, dtype=target)
    # One file at a time, so peak memory is the model plus one shard, not two models.
    by_file: dict[Path, dict[str, str]] = {}
    for canonical, name in found.items():
        by_file.setdefault(infos[name].file, {})[canonical] = name
    loaded: set[str] = {"lm_head.weight"} if cfg.tie_embeddings else set()
    for names in by_file.values():
        raw = read_tensors(infos, list(names.values()))
        part = arch.weights_to_splice({c: raw[n] for c, n in names.items()}, cfg)
        model.load_state_dict(part, strict=False)
        loaded |= part.keys()
    missing = sorted(set(model.state_dict()) - loaded)
    if missing:  # unreachable after _match_checkpoint; kept so a mapping bug cannot pass silently
        raise CheckpointError(f"{directory}: splice tensors {_names(missing)} were not loaded")
    return model.eval()  # type: ignore[return-value]


def load_pretrained(
    path: str | Path, *, dtype: torch.dtype | str = "auto", device: torch.device | str = "cpu"
) -> tuple[DecoderLM, HFTokenizer | None]:
    """``(model, tokenizer)`` from a Hugging Face directory; tokenizer is None without ``tokenizer.json``."""
    model = load_model(path, dtype=dtype, device=device)
    tok = HFTokenizer.from_pretrained(path) if (Path(path) / "tokenizer.json").is_file() else None
    return model, tok


def build_pretrained(config: Any, ctx: object = None) -> DecoderLM:
    """Registry factory of ``{"type": "pretrained", "path": ...}`` (``PretrainedModelConfig``)."""
    dtype: torch.dtype | str = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
    model = load_model(config.path, dtype=dtype)
    return model.train()
