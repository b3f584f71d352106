"""Quantize the chosen linear layers of a built model; report what they cost in bytes.

A ``Quantizer`` (``splice.interfaces``; registered by plugins such as splice-qlora under
tags like ``nf4``, ``fp4``, ``int8``) turns one ``nn.Linear`` into a quantized module.
This module decides *which* linears, swaps them in place, and measures the result::

    report = quantize_model(model, quantizer, targets="all-linear")  # lm_head excluded
    report.bytes_per_param   # e.g. 0.53 for NF4 + double quantization on 128-wide layers

Every quantized module implements ``QuantizedLinear`` (sizes, a dequantized weight, its
storage bytes), so the core can report and dequantize a model without knowing which
plugin quantized it. Quantized layers are frozen: their weights are not parameters, and
their bias (if any) is a parameter with ``requires_grad=False``. Train them through an
adapter (QLoRA).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

#: Module names (last component) left in full precision unless targeted by name: the
#: output head (often tied to the embedding, and the layer most sensitive to rounding).
DEFAULT_EXCLUDE: tuple[str, ...] = ("lm_head",)


@runtime_checkable
class QuantizedLinear(Protocol):
    """A frozen linear layer stored quantized; ``forward`` dequantizes on the fly."""

    in_features: int
    out_features: int

    def dequantize(self) -> Tensor:
        """``(out_features, in_features)``: the weight as the forward pass sees it."""
        ...

    def storage_nbytes(self) -> int:
        """Bytes a saved state dict holds for this layer's weight, bias excluded: codes,
        scales and every table or metadata tensor saved with them (see ``saved_nbytes``)."""
        ...


def saved_nbytes(module: nn.Module) -> int:
    """Bytes of every tensor in ``module``'s state dict but its ``bias``: what a saved
    checkpoint holds for a quantized layer's weight (code tables and metadata included)."""
    return sum(t.numel() * t.element_size() for k, t in module.state_dict().items() if k != "bias")


@dataclass(frozen=True)
class QuantizationReport:
    """What quantizing (the linears of) a model stored.

    Attributes:
        layers: names of the quantized modules.
        params: weight elements they hold (``sum(out * in)``).
        nbytes: the bytes a saved state dict holds for their weights (bias excluded).
        float_nbytes: the same weights' bytes in the dtype they had before.
    """

    layers: tuple[str, ...]
    params: int
    nbytes: int
    float_nbytes: int

    @property
    def bytes_per_param(self) -> float:
        """Saved bytes per quantized weight element (0.5 is exactly 4 bits)."""
        return self.nbytes / self.params if self.params else 0.0

    def summary(self) -> str:
        """One line for logs: layers, bytes/param and the saving against float."""
        return (
            f"quantized {len(self.layers)} linear layers ({self.params:,} weights): "
            f"{self.nbytes / 2**20:.2f} MiB at {self.bytes_per_param:.3f} bytes/param "
            f"(was {self.float_nbytes / 2**20:.2f} MiB)"
        )


def linear_names(model: nn.Module) -> list[str]:
    """Names of every ``nn.Linear`` or already-quantized linear inside ``model``."""
    return [n for n, m in model.named_modules() if _is_linear(m)]


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, QuantizedLinear))


def _matches(name: str, targets: str | Sequence[str]) -> bool:
    if isinstance(targets, str):
        return targets == "all-linear" or re.fullmatch(targets, name) is not None
    last = name.rsplit(".", 1)[-1]
    return name in targets or last in targets


def select_modules(
    model: nn.Module,
    targets: str | Sequence[str] = "all-linear",
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> list[str]:
    """Names of the modules ``targets`` picks, in model order.

    Args:
        targets: ``"all-linear"`` (every ``nn.Linear``), a regex matched against the full
            module name, or a list of names (full, or the last component such as ``"q_proj"``).
        exclude: last-component or full names never picked by ``"all-linear"`` or a regex
            (a name listed in ``targets`` explicitly is still picked).

    Raises:
        ValueError: nothing matched (lists the model's linear layers), or a matched module
            is not an ``nn.Linear`` (names it and its type).
    """
    picked = []
    for name, module in model.named_modules():
        if not name or not _matches(name, targets):
            continue
        explicit = not isinstance(targets, str) and (
            name in targets or name.rsplit(".", 1)[-1] in targets
        )
        if not explicit and (name in exclude or name.rsplit(".", 1)[-1] in exclude):
            continue
        if isinstance(targets, str) and targets == "all-linear" and not _is_linear(module):
            continue
        if not _is_linear(module):
            if isinstance(targets, str):  # a regex may match containers; keep only linears
                continue
            raise ValueError(
                f"cannot quantize {name!r}: it is a {type(module).__name__}, "
                "only nn.Linear layers can be quantized"
            )
        picked.append(name)
    if not picked:
        raise ValueError(
            f"quantization targets {targets!r} matched no linear layer; the model's linear "
            f"layers are {linear_names(model)}"
        )
    return picked


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def _shared_weights(model: nn.Module) -> dict[int, list[str]]:
    """``id(parameter) -> names of the modules holding it`` for weights held more than once."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append(name)
    return {k: v for k, v in owners.items() if len(v) > 1}


def quantize_model(
    model: nn.Module,
    quantizer: Any,
    *,
    targets: str | Sequence[str] = "all-linear",
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> QuantizationReport:
    """Replace the selected ``nn.Linear`` layers of ``model`` by ``quantizer.quantize(linear)``.

    Works in place (each float weight is freed as its layer is swapped) and returns the
    report. Already-quantized layers are left as they are.

    Raises:
        ValueError: see ``select_modules``; or a selected layer shares its weight with
            another module (e.g. a head tied to the embedding), which quantizing would untie.
    """
    shared = _shared_weights(model)
    names = select_modules(model, targets, exclude)
    for name in names:
        linear = model.get_submodule(name)
        if isinstance(linear, QuantizedLinear):
            continue
        tied = shared.get(id(linear.weight))
        if tied:
            raise ValueError(
                f"cannot quantize {name!r}: its weight is shared with {sorted(set(tied) - {name})} "
                "(tied embeddings); exclude it or untie the weights first"
            )
        _set_submodule(model, name, quantizer.quantize(linear))
    return quantization_report(model)


def quantization_report(model: nn.Module) -> QuantizationReport:
    """Sizes of every ``QuantizedLinear`` in ``model`` (empty report when there is none)."""
    layers, params, nbytes, float_nbytes = [], 0, 0, 0
    for name, m in model.named_modules():
        if isinstance(m, QuantizedLinear):
            n = m.in_features * m.out_features
            layers.append(name)
            params += n
            nbytes += m.storage_nbytes()
            dtype = getattr(m, "weight_dtype", torch.float32)
            float_nbytes += n * torch.empty((), dtype=dtype).element_size()
    return QuantizationReport(tuple(layers), params, nbytes, float_nbytes)


def dequantize_model(model: nn.Module, *, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every ``QuantizedLinear`` by an ``nn.Linear`` holding its dequantized weight.

    The result is a plain float model (e.g. for ``splice.hf.save_pretrained``); the new
    layers' parameters are trainable again, like any freshly loaded model's.
    """
    for name, m in list(model.named_modules()):
        if not isinstance(m, QuantizedLinear):
            continue
        w = m.dequantize()
        bias = getattr(m, "bias", None)
        linear = nn.Linear(
            m.in_features, m.out_features, bias=bias is not None, device=w.device,
            dtype=dtype or w.dtype,
        )  # fmt: skip
        with torch.no_grad():
            linear.weight.copy_(w)
            if bias is not None:
                linear.bias.copy_(bias)
        _set_submodule(model, name, linear)
    return model


__all__ = [
    "DEFAULT_EXCLUDE",
    "QuantizationReport",
    "QuantizedLinear",
    "dequantize_model",
    "linear_names",
    "quantization_report",
    "quantize_model",
    "saved_nbytes",
    "select_modules",
]
