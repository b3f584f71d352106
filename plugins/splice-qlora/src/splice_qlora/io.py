"""Save and load quantized models: safetensors (with bitsandbytes' quant state) + JSON, no pickle.

A folder written by ``save_quantized``::

    model.safetensors    every tensor of the model's state dict: packed 4-bit codes, block
                         scales and the quant state (``<layer>.weight.quant_state.*``, a uint8
                         tensor of JSON) of quantized layers; float tensors as they are
    quantization.json    {"quantizer": <the quantizer config>, "layers": {name: [out, in, bias]}}

``load_quantized(model, folder)`` takes a freshly built float model of the same config,
swaps the listed layers for empty quantized shells and loads the file into it: the float
weights of those layers are never quantized again (nor needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from splice.checkpoint import atomic_write_text, load_model_weights, save_model_weights
from splice.config import QuantizerField
from splice.quantization import quantization_report
from torch import nn

from splice_qlora.quantizers import quantizer_for

META_FILE = "quantization.json"
MODEL_FILE = "model.safetensors"


def save_quantized(model: nn.Module, folder: str | Path, config: Any) -> Path:
    """Write ``model`` (quantized with ``config``, e.g. an ``NF4Config``) to ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    layers = {}
    for name in quantization_report(model).layers:
        m = model.get_submodule(name)
        layers[name] = [m.out_features, m.in_features, getattr(m, "bias", None) is not None]
    save_model_weights(model, out / MODEL_FILE)
    meta = {"quantizer": config.model_dump(mode="json"), "layers": layers}
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    return out


def load_quantized(model: nn.Module, folder: str | Path) -> nn.Module:
    """Load a ``save_quantized`` folder into ``model`` (built, not yet quantized); returns it.

    Raises:
        FileNotFoundError: the folder has no ``quantization.json`` / ``model.safetensors``.
        ValueError: a listed layer is missing from ``model`` or has other sizes (names it),
            or the weights do not match (missing / unexpected keys).
    """
    src = Path(folder)
    meta_path = src / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not found (not a save_quantized folder?)")
    meta = json.loads(meta_path.read_text())
    quantizer = quantizer_for(TypeAdapter(QuantizerField).validate_python(meta["quantizer"]))
    for name, (out_f, in_f, bias) in meta["layers"].items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{meta_path}: layer {name!r} is not in the model") from None
        if (getattr(old, "out_features", None), getattr(old, "in_features", None)) != (out_f, in_f):
            raise ValueError(
                f"{meta_path}: layer {name!r} is ({out_f}, {in_f}) in the file but "
                f"{type(old).__name__}({getattr(old, 'in_features', '?')}, "
                f"{getattr(old, 'out_features', '?')}) in the model"
            )
        parent, _, leaf = name.rpartition(".")
        shell = quantizer.shell(in_f, out_f, bias=bias)
        setattr(model.get_submodule(parent) if parent else model, leaf, shell)
    load_model_weights(model, src / MODEL_FILE)
    return model
