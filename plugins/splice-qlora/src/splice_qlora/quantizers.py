"""The ``Quantizer``s registered as ``nf4``, ``fp4`` and ``int8`` (``splice.interfaces.Quantizer``).

``quantize(linear) -> module``, ``dequantize(module) -> nn.Linear``, ``nbytes(module)``.
To quantize the chosen layers of a whole model use ``splice.quantization.quantize_model``
(or ``quantize(model, config)`` here, which reads ``targets``/``exclude`` from the config).
"""

from __future__ import annotations

from typing import Any

import torch
from splice.quantization import QuantizationReport, QuantizedLinear, quantize_model
from torch import nn

from splice_qlora.configs import FourBitConfig, Int8Config
from splice_qlora.dtype import resolve_compute_dtype
from splice_qlora.linear4bit import Linear4bit
from splice_qlora.linear8bit import Linear8bit


def _check_linear(linear: Any) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(
            f"cannot quantize a {type(linear).__name__}: the bitsandbytes quantizers take "
            "nn.Linear layers only"
        )


def _to_linear(module: nn.Module) -> nn.Linear:
    if not isinstance(module, QuantizedLinear):
        raise TypeError(f"expected a quantized linear layer, got {type(module).__name__}")
    w = module.dequantize()
    bias = getattr(module, "bias", None)
    linear = nn.Linear(module.in_features, module.out_features, bias=bias is not None,
                       device=w.device, dtype=w.dtype)  # fmt: skip
    with torch.no_grad():
        linear.weight.copy_(w)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


class FourBitQuantizer:
    """NF4 / FP4 blockwise quantization through bitsandbytes."""

    def __init__(self, config: FourBitConfig) -> None:
        self.config = config

    def quantize(self, linear: nn.Linear) -> Linear4bit:
        _check_linear(linear)
        c = self.config
        return Linear4bit.from_linear(
            linear,
            quant_type=c.type,
            blocksize=c.blocksize,
            double_quant=c.double_quant,
            compute_dtype=resolve_compute_dtype(
                c.compute_dtype, linear.weight.device, min(linear.in_features, linear.out_features)
            ),
        )

    def shell(self, in_features: int, out_features: int, *, bias: bool) -> Linear4bit:
        """An empty layer of this quantizer's kind, for loading a saved quantized model."""
        width = min(in_features, out_features)
        dtype = resolve_compute_dtype(self.config.compute_dtype, width=width)
        return Linear4bit.empty(in_features, out_features, bias=bias, compute_dtype=dtype)

    def dequantize(self, module: nn.Module) -> nn.Linear:
        return _to_linear(module)

    def nbytes(self, module: nn.Module) -> int:
        return module.storage_nbytes() if isinstance(module, QuantizedLinear) else 0


class Int8Quantizer:
    """LLM.int8 row-wise quantization through bitsandbytes."""

    def __init__(self, config: Int8Config) -> None:
        self.config = config

    def quantize(self, linear: nn.Linear) -> Linear8bit:
        _check_linear(linear)
        return Linear8bit.from_linear(linear, threshold=self.config.threshold)

    def shell(self, in_features: int, out_features: int, *, bias: bool) -> Linear8bit:
        return Linear8bit(in_features, out_features, bias=bias, threshold=self.config.threshold)

    def dequantize(self, module: nn.Module) -> nn.Linear:
        return _to_linear(module)

    def nbytes(self, module: nn.Module) -> int:
        return module.storage_nbytes() if isinstance(module, QuantizedLinear) else 0


def build_four_bit(config: FourBitConfig, ctx: object = None) -> FourBitQuantizer:
    return FourBitQuantizer(config)


def build_int8(config: Int8Config, ctx: object = None) -> Int8Quantizer:
    return Int8Quantizer(config)


def quantizer_for(config: FourBitConfig | Int8Config) -> FourBitQuantizer | Int8Quantizer:
    """The quantizer a config describes (without going through the registry)."""
    if isinstance(config, Int8Config):
        return Int8Quantizer(config)
    return FourBitQuantizer(config)


def quantize(model: nn.Module, config: FourBitConfig | Int8Config) -> QuantizationReport:
    """Quantize ``model``'s linears that ``config.targets`` / ``config.exclude`` select, in place."""
    return quantize_model(
        model, quantizer_for(config), targets=config.targets, exclude=config.exclude
    )
