"""Configs of the bitsandbytes quantizers (torch-free, so loading the plugin stays light).

``nf4`` / ``fp4``: 4-bit blockwise quantization (QLoRA, Dettmers et al. 2023). Each block
of ``blocksize`` consecutive weights is scaled by its absolute maximum and every weight
rounded to one of 16 levels: NF4's levels are the quantiles of a normal distribution
(information-theoretically optimal for normally distributed weights), FP4's a 4-bit float.
``double_quant`` quantizes the per-block fp32 scales themselves to 8 bits in blocks of 256,
which is what brings storage from 4.5 to ~4.127 bits per weight at ``blocksize=64``.

``int8``: LLM.int8 (Dettmers et al. 2022): per-row int8 weights; input columns with any
|value| above ``threshold`` (outlier features) are multiplied in 16-bit instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from splice.config import ComponentConfig
from splice_lora.configs import LoRAConfig

#: Block sizes bitsandbytes' 4-bit kernels accept.
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)

ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]
Targets = str | list[str]


class _TargetsMixin(ComponentConfig):
    """Which linears to quantize (see ``splice.quantization.select_modules``).

    Attributes:
        targets: ``"all-linear"``, a regex on the full module name, or a list of names.
        exclude: names left in full precision by ``"all-linear"``/regex (the output head).
    """

    targets: Targets = "all-linear"
    exclude: list[str] = Field(default_factory=lambda: ["lm_head"])


class FourBitConfig(_TargetsMixin):
    """Shared fields of ``nf4`` and ``fp4``.

    Attributes:
        blocksize: weights per absmax block (one of ``BLOCKSIZES``; 64 as in QLoRA).
        double_quant: also quantize the block scales (8-bit, blocks of 256).
        compute_dtype: dtype of the matmul after dequantization. ``"auto"``: bfloat16 where
            the device runs it natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX),
            else float32.
    """

    type: str
    blocksize: int = 64
    double_quant: bool = True
    compute_dtype: ComputeDtype = "auto"

    @field_validator("blocksize")
    @classmethod
    def _check_blocksize(cls, v: int) -> int:
        if v not in BLOCKSIZES:
            raise ValueError(
                f"blocksize={v} is not supported by bitsandbytes; use one of {BLOCKSIZES}"
            )
        return v


class NF4Config(FourBitConfig):
    """4-bit NormalFloat (QLoRA's default data type)."""

    type: Literal["nf4"] = "nf4"


class FP4Config(FourBitConfig):
    """4-bit float (1 sign, 2 exponent, 1 mantissa bit)."""

    type: Literal["fp4"] = "fp4"


class Int8Config(_TargetsMixin):
    """LLM.int8: int8 weights with a per-row scale; 16-bit matmul for outlier input columns.

    Attributes:
        threshold: an input column with any |x| above this is an outlier (6.0 in the
            paper); 0 disables the decomposition (every column in int8).
    """

    type: Literal["int8"] = "int8"
    threshold: float = Field(default=6.0, ge=0.0)


class QLoRAConfig(LoRAConfig):
    """QLoRA (Dettmers et al., 2023): quantize the frozen base to 4 bits, then train LoRA on it.

    The LoRA fields are ``LoRAConfig``'s (rank, alpha, targets, init, ...), with the paper's
    defaults: LoRA on every linear layer (``targets="all-linear"``, the output head
    excluded), ``r=16``, ``alpha=32``, dropout 0.05 (PEFT's defaults for the same recipe are
    close). ``quantization`` says how the base is stored (NF4 + double quantization, blocks
    of 64). Equivalent to ``quantizer: nf4`` + ``adapter: lora`` in an ``ExperimentConfig``.
    """

    type: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    r: int = Field(default=16, gt=0)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    targets: list[str] | str = Field(default="all-linear", validate_default=True)
    quantization: NF4Config | FP4Config = Field(default_factory=NF4Config)

    def lora(self) -> LoRAConfig:
        """The plain LoRA part of this config."""
        return LoRAConfig(**self.model_dump(exclude={"type", "quantization"}))
