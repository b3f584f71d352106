"""``Linear8bit``: a frozen linear layer in LLM.int8 form (Dettmers et al., 2022).

Storage: ``weight`` ``(out, in)`` int8 and ``SCB`` ``(out,)`` fp32, the per-row absmax
(``W ~= weight * SCB[:, None] / 127``): about 1 byte per weight. The state dict uses the
same names as bitsandbytes / transformers (``weight``, ``SCB``).

Forward is bitsandbytes' ``matmul`` with a ``MatmulLtState``: the input is quantized
row-wise to int8 and multiplied in int8 with int32 accumulation, except the input columns
holding an outlier (|x| > ``threshold``), which are multiplied in 16-bit against the
dequantized weight columns. bitsandbytes does this part in float16 on every device, so
inputs are cast to float16 for the matmul and the output is cast back.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from splice.quantization import saved_nbytes
from torch import Tensor, nn

from splice_qlora._bnb import bnb

# bitsandbytes warns on every call that float32 inputs are cast to float16 (documented above).
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")


class Linear8bit(nn.Module):
    """A frozen ``nn.Linear`` stored as int8 rows plus a per-row scale.

    Args:
        in_features, out_features: the linear's sizes.
        bias: whether the layer has a bias (kept in full precision, frozen).
        threshold: outlier threshold of the mixed-precision decomposition (0: none).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool,
        threshold: float = 6.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.threshold = threshold
        self.weight_dtype = torch.float32
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("SCB", torch.ones(out_features, device=device))
        self.bias = (
            nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False)
            if bias
            else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, threshold: float = 6.0) -> Linear8bit:
        """Quantize ``linear`` row-wise to int8.

        Raises:
            TypeError: ``linear`` is not an ``nn.Linear``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"Linear8bit.from_linear needs an nn.Linear, got {type(linear).__name__}"
            )
        w = linear.weight.detach()
        cb, scb, _ = bnb().functional.int8_vectorwise_quant(w.float())
        layer = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            threshold=threshold, device=w.device,
        )  # fmt: skip
        layer.weight, layer.SCB, layer.weight_dtype = cb, scb.float(), w.dtype
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())  # type: ignore[union-attr]
        return layer

    def _state(self) -> Any:
        state = bnb().MatmulLtState()
        state.CB, state.SCB = self.weight, self.SCB
        state.threshold = self.threshold
        state.has_fp16_weights = False
        state.is_training = self.training
        return state

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        dtype = x.dtype
        bias = None if self.bias is None else self.bias.to(torch.float16)
        y = bnb().matmul(x.to(torch.float16), self.weight, bias=bias, state=self._state())
        return y.to(dtype)

    def dequantize(self) -> Tensor:
        """``(out, in)``: ``weight * SCB / 127`` in the dtype the weight had."""
        return (self.weight.float() * (self.SCB[:, None] / 127.0)).to(self.weight_dtype)

    def storage_nbytes(self) -> int:
        """What a saved state dict holds for the weight: int8 codes + fp32 row scales."""
        return saved_nbytes(self)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, threshold={self.threshold}"
        )
