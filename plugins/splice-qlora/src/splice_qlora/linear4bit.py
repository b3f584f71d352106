"""``Linear4bit``: a frozen linear layer stored in 4 bits (NF4 or FP4), dequantized on the fly.

Storage, for an ``(out, in)`` weight quantized in blocks of ``blocksize`` weights:

* ``weight``: ``(out * in / 2, 1)`` uint8, two 4-bit codes per byte;
* ``absmax``: one scale per block: fp32, or uint8 codes when ``double_quant`` is on,
  in which case ``nested_absmax`` (fp32, one per 256 blocks) and ``offset`` rescale them;
* ``code`` / ``nested_code``: the 16 NF4/FP4 levels and the 256-entry 8-bit map. They are
  constants of the data type, but a saved state dict holds them in every layer (as
  bitsandbytes' layout does), so ``storage_nbytes`` counts them in every layer.

The state dict uses bitsandbytes' serialized layout (``weight``, ``weight.absmax``,
``weight.quant_map``, ``weight.nested_absmax``, ``weight.nested_quant_map``,
``weight.quant_state.bitsandbytes__nf4``: a uint8 tensor holding the JSON of the
non-tensor fields), so it saves to safetensors without pickle and is the layout
transformers reads for pre-quantized bitsandbytes checkpoints.

On CPU, a layer whose rows are not whole blocks (``in_features % blocksize != 0``) is
decoded in torch (``splice_qlora.decode``): bitsandbytes' CPU kernel gets it wrong.

Forward runs bitsandbytes' ``matmul_4bit`` (or ``DecodedLinear4bit``, decoding in torch),
whose backward dequantizes the weight again
instead of keeping a float copy alive between forward and backward (the point of QLoRA:
the float weights never exist all at once). Under a LoRA adapter, splice-lora's fused
LoRA linear does the same through ``dense_matmul_weight`` (dequantize in forward and again
in backward) with the adapter's matmuls in the same autograd node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from splice.quantization import saved_nbytes
from torch import Tensor, nn

from splice_qlora._bnb import bnb
from splice_qlora.decode import NESTED_BLOCKSIZE, DecodedLinear4bit, cpu_kernel_wrong, decode_4bit


class Linear4bit(nn.Module):
    """A frozen ``nn.Linear`` whose weight is 4-bit blockwise quantized.

    Build one with ``Linear4bit.from_linear`` (quantizes) or ``Linear4bit.empty`` (a shell
    that ``load_state_dict`` fills). The bias stays in full precision, frozen.

    Args:
        in_features, out_features: the linear's sizes.
        bias: whether the layer has a bias.
        compute_dtype: inputs are cast to it for the matmul; the output is cast back.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        compute_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.compute_dtype = compute_dtype
        self.quant_type = "nf4"
        self.blocksize = 64
        self.weight_dtype = torch.float32
        u8 = {"dtype": torch.uint8, "device": device}
        self.register_buffer("weight", torch.empty(0, 1, **u8))  # packed codes
        self.register_buffer("absmax", torch.empty(0, device=device), persistent=False)
        self.register_buffer("code", torch.empty(0, device=device), persistent=False)
        self.nested = False
        self.register_buffer("nested_absmax", None, persistent=False)
        self.register_buffer("nested_code", None, persistent=False)
        self.register_buffer("offset", None, persistent=False)
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False)
            if bias
            else None
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        quant_type: str = "nf4",
        blocksize: int = 64,
        double_quant: bool = True,
        compute_dtype: torch.dtype = torch.float32,
    ) -> Linear4bit:
        """Quantize ``linear``'s weight (its ``(out, in)`` orientation, as bitsandbytes wants).

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``.
            ValueError: bitsandbytes rejects ``blocksize`` or ``quant_type``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"Linear4bit.from_linear needs an nn.Linear, got {type(linear).__name__}"
            )
        F = bnb().functional
        w = linear.weight.detach()
        try:
            packed, state = F.quantize_4bit(
                w.contiguous(),
                blocksize=blocksize,
                quant_type=quant_type,
                compress_statistics=double_quant,
            )
        except ValueError as exc:
            raise ValueError(
                f"bitsandbytes cannot quantize to {quant_type} with blocksize={blocksize}: {exc}"
            ) from None
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            device=w.device,
        )
        layer._set_state(packed, state)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())  # type: ignore[union-attr]
        return layer

    @classmethod
    def empty(cls, in_features: int, out_features: int, **kwargs: Any) -> Linear4bit:
        """A shell with no weights yet, for ``load_state_dict`` to fill."""
        return cls(in_features, out_features, **kwargs)

    def _set_state(self, packed: Tensor, state: Any) -> None:
        self.weight = packed
        self.absmax, self.code = state.absmax, state.code
        self.quant_type, self.blocksize, self.weight_dtype = (
            state.quant_type,
            state.blocksize,
            state.dtype,
        )
        self.nested = state.nested
        if state.nested:
            self.nested_absmax, self.nested_code = state.state2.absmax, state.state2.code
            self.offset = torch.as_tensor(state.offset, dtype=torch.float32)
        else:
            self.nested_absmax = self.nested_code = self.offset = None

    def quant_state(self) -> Any:
        """The bitsandbytes ``QuantState`` over this module's (current-device) buffers."""
        QuantState = bnb().functional.QuantState
        state2 = None
        if self.nested:
            state2 = QuantState(
                absmax=self.nested_absmax,
                code=self.nested_code,
                blocksize=NESTED_BLOCKSIZE,
                dtype=torch.float32,
            )
        return QuantState(
            absmax=self.absmax,
            shape=torch.Size((self.out_features, self.in_features)),
            code=self.code,
            blocksize=self.blocksize,
            quant_type=self.quant_type,
            dtype=self.weight_dtype,
            offset=self.offset,
            state2=state2,
        )

    # ------------------------------------------------------------------ use
    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        if self.weight.numel() == 0:
            raise RuntimeError("Linear4bit has no weights: load a state dict into it first")
        dtype = x.dtype
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        if self._decode_in_torch():  # bitsandbytes' CPU decode is wrong for this shape
            y = DecodedLinear4bit.apply(x.to(self.compute_dtype), bias, self.dequantize)
            return y.to(dtype)
        y = bnb().matmul_4bit(
            x.to(self.compute_dtype), self.weight.t(), self.quant_state(), bias=bias
        )
        return y.to(dtype)

    def dense_matmul_weight(self, dtype: torch.dtype) -> Callable[[], Tensor] | None:
        """For splice-lora's fused LoRA linear: a function that dequantizes the ``(out, in)``
        weight ``forward`` multiplies an input of ``dtype`` by (``forward`` is then exactly
        ``F.linear(x, W, bias)``), or None when ``forward`` would cast the input first."""
        if dtype != self.compute_dtype or self.weight.numel() == 0:
            return None
        return lambda: self.dequantize().to(dtype)

    def dequantize(self) -> Tensor:
        """``(out, in)`` in the dtype the weight had before quantization."""
        if self._decode_in_torch():
            return decode_4bit(
                self.weight,
                self.absmax,
                self.code,
                shape=(self.out_features, self.in_features),
                blocksize=self.blocksize,
                dtype=self.weight_dtype,
                nested_absmax=self.nested_absmax if self.nested else None,
                nested_code=self.nested_code if self.nested else None,
                offset=self.offset if self.nested else None,
            )
        return bnb().functional.dequantize_4bit(self.weight, self.quant_state())

    def _decode_in_torch(self) -> bool:
        return cpu_kernel_wrong(self.weight.device, self.in_features, self.blocksize)

    def storage_nbytes(self) -> int:
        """Bytes a saved state dict holds for the weight: packed codes, block scales, nested
        scales, both code tables and the quant-state JSON (bias excluded)."""
        return saved_nbytes(self)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, quant_type={self.quant_type}, "
            f"blocksize={self.blocksize}, double_quant={self.nested}, "
            f"compute_dtype={str(self.compute_dtype).removeprefix('torch.')}"
        )

    # ------------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)  # weight (packed), bias
        for key, value in self.quant_state().as_dict(packed=True).items():
            destination[f"{prefix}weight.{key}"] = value if keep_vars else value.detach()

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        quant = {
            k[len(prefix) + len("weight.") :]: v
            for k, v in state_dict.items()
            if k.startswith(f"{prefix}weight.")
        }
        packed = state_dict.get(f"{prefix}weight")
        if packed is not None and quant:
            state = bnb().functional.QuantState.from_dict(dict(quant), device=self.weight.device)
            shape = tuple(state.shape)
            if shape != (self.out_features, self.in_features):
                error_msgs.append(
                    f"{prefix}weight: quantized shape {shape} does not fit this layer "
                    f"({self.out_features}, {self.in_features})"
                )
                return
            self._set_state(packed.to(self.weight.device).clone(), state)
        elif packed is not None:
            error_msgs.append(f"{prefix}weight: no quant state ({prefix}weight.*) to go with it")
            return
        # The quant-state keys are consumed above; torch would call "weight.absmax" unexpected.
        rest = {k: v for k, v in state_dict.items() if not k.startswith(f"{prefix}weight.")}
        super()._load_from_state_dict(
            rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
