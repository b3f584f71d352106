"""Write a splice ``DecoderLM`` as a Hugging Face checkpoint directory.

The result loads with ``transformers``' ``AutoModelForCausalLM.from_pretrained``
(and with ``splice.hf.load_pretrained``): ``config.json``, ``model.safetensors``
or shards plus ``model.safetensors.index.json``, and the tokenizer files when a
tokenizer is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splice.hf.convert import architecture_of
from splice.hf.safetensors_io import write_checkpoint
from splice.models.configs import DecoderConfig


def save_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    tokenizer: Any = None,
    model_type: str | None = None,
    max_shard_size: int | str = "5GB",
    dtype: torch.dtype | None = None,
) -> Path:
    """Export ``model`` (a ``DecoderLM``) to ``path`` in Hugging Face layout.

    Args:
        model: a model built from a ``DecoderConfig``.
        tokenizer: an ``HFTokenizer`` to save alongside (``tokenizer.json`` + config); its
            bos/eos/pad ids go into ``config.json``.
        model_type: ``"llama"``, ``"qwen2"`` or ``"gpt2"``; inferred from the config if None.
        max_shard_size: bytes or e.g. ``"2GB"``; larger checkpoints are sharded.
        dtype: cast the weights on the way out (default: keep the model's dtype).

    Returns:
        ``path``.

    Raises:
        ValueError: the model's config has no Hugging Face equivalent (names the fields).
    """
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, DecoderConfig):
        raise ValueError(
            f"save_pretrained needs a DecoderLM (config DecoderConfig), got {type(cfg).__name__}"
        )
    arch = architecture_of(cfg, model_type)
    out = Path(path)
    tensors = arch.weights_to_hf(model.state_dict(), cfg)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    hf = arch.config_to_hf(cfg)
    first = next(iter(tensors.values()))
    hf["dtype"] = hf["torch_dtype"] = str(first.dtype).removeprefix("torch.")
    if tokenizer is not None:
        hf.update(
            bos_token_id=tokenizer.bos_id,
            eos_token_id=tokenizer.eos_id,
            pad_token_id=tokenizer.pad_id,
        )
    write_checkpoint(tensors, out, max_shard_size=max_shard_size)
    (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
