"""Routed experts stored as batched weights, run on contiguous per-expert slices.

The input rows arrive sorted by expert (``counts[e]`` rows for expert ``e``, in order),
so expert ``e`` is one dense matmul on its slice. With ``F.grouped_mm`` all
experts run in one call (a grouped GEMM); otherwise a loop over the ``E`` slices
(never over tokens) does the same work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

# The public ``F.grouped_mm`` (torch >= 2.10) or the private op it wraps (torch 2.8-2.9).
GROUPED_MM: Callable[..., Tensor] | None = getattr(F, "grouped_mm", None) or getattr(
    torch, "_grouped_mm", None
)
HAS_GROUPED_MM = GROUPED_MM is not None


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: the autocast dtype where autocast is on."""
    if torch.is_autocast_enabled(x.device.type):  # grouped_mm has no autocast rule
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def strides_aligned(dtype: torch.dtype, *widths: int) -> bool:
    """Whether rows of every width in ``widths`` are a multiple of 16 bytes in ``dtype``.

    torch's grouped GEMM (CPU and CUDA) refuses operands whose row strides are not
    (``strides should be multiple of 16 bytes``): e.g. width 45 or 50 in float32, 60 in bf16.
    """
    size = torch.empty((), dtype=dtype).element_size()
    return all(w * size % 16 == 0 for w in widths)


def grouped_mm_supported(x: Tensor, *widths: int) -> bool:
    """Whether the grouped GEMM runs for ``x``'s device/dtype and these widths in this torch.

    ``widths``: the model width ``D`` and the expert width ``H`` (every operand's row is one
    of ``D``, ``H``, ``2H``). Rows must be 16-byte aligned in the compute dtype on every
    device. CPU: every floating dtype (a CPU kernel exists since torch 2.9). CUDA: bf16 on
    compute capability 8.0+ (9.0 for the private op of torch < 2.10), as the kernels
    require. Anything else takes the per-expert loop.
    """
    if GROUPED_MM is None:
        return False
    dtype = compute_dtype(x)
    if not strides_aligned(dtype, *widths):
        return False
    if x.device.type == "cpu":
        return True
    if x.device.type == "cuda":
        need = (8, 0) if hasattr(F, "grouped_mm") else (9, 0)
        capable = torch.cuda.get_device_capability(x.device) >= need
        return dtype == torch.bfloat16 and capable
    return False


class _SwiGLU(torch.autograd.Function):
    """``silu(gate) * up`` of ``h = [gate | up] (M, 2H)`` -> ``(M, H)``.

    The same numbers as autograd through ``h.chunk(2)``, but the backward writes both halves
    of the gradient straight into one ``(M, 2H)`` tensor instead of concatenating two
    ``(M, H)`` halves (a full extra copy, ~10% of an expert step on CPU).
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor) -> Tensor:  # type: ignore[override]
        gate, up = h.chunk(2, dim=-1)
        s = F.silu(gate)
        ctx.save_for_backward(h, s)
        return s * up

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        h, s = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        grad_h = torch.empty_like(h)
        grad_gate, grad_up = grad_h.chunk(2, dim=-1)
        torch.mul(grad, s, out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        return grad_h


def swiglu(h: Tensor) -> Tensor:
    """``silu(gate) * up`` of ``h = [gate | up] (..., 2H)`` -> ``(..., H)`` (fused backward)."""
    out: Tensor = _SwiGLU.apply(h)
    return out


class GroupedExperts(nn.Module):
    """``E`` MLP experts: ``xs (M, D)`` sorted by expert, ``counts (E,)`` -> ``(M, D)``.

    Parameters (Hugging Face Mixtral/Qwen-MoE layout, row = output feature):
        ``gate_up``: ``(E, 2H, D)`` for SwiGLU (gate rows then up rows), ``(E, H, D)`` for GELU.
        ``down``: ``(E, D, H)``.

    Args:
        grouped_mm: ``"auto"`` (grouped GEMM where supported), ``"on"``, or ``"off"``.
    """

    def __init__(
        self,
        n_experts: int,
        d_model: int,
        hidden: int,
        *,
        activation: str = "swiglu",
        grouped_mm: str = "auto",
    ) -> None:
        super().__init__()
        if activation not in ("swiglu", "gelu"):
            raise ValueError(f"activation={activation!r}, expected 'swiglu' or 'gelu'")
        self.n_experts, self.d_model, self.hidden = n_experts, d_model, hidden
        self.activation, self.grouped_mm = activation, grouped_mm
        rows = 2 * hidden if activation == "swiglu" else hidden
        self.gate_up = nn.Parameter(torch.empty(n_experts, rows, d_model))
        self.down = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        # Normal(0, std) like the core's Linear init; the model's init does not reach 3-D weights.
        nn.init.normal_(self.gate_up, std=std)
        nn.init.normal_(self.down, std=std / math.sqrt(2.0))

    def _act(self, h: Tensor) -> Tensor:
        if self.activation == "swiglu":
            return swiglu(h)  # (M, 2H) -> (M, H)
        return F.gelu(h)

    def use_grouped(self, xs: Tensor) -> bool:
        if self.grouped_mm == "off":
            return False
        if self.grouped_mm == "on":
            if not HAS_GROUPED_MM:
                raise RuntimeError("grouped_mm='on' but this torch has no grouped GEMM op")
            dtype = compute_dtype(xs)
            if not strides_aligned(dtype, self.d_model, self.hidden):
                raise ValueError(
                    f"grouped_mm='on' needs d_model={self.d_model} and expert width "
                    f"{self.hidden} to be multiples of 16 bytes in {dtype} (torch's grouped "
                    "GEMM); use grouped_mm='auto' to fall back to the per-expert loop"
                )
            return True
        return grouped_mm_supported(xs, self.d_model, self.hidden)

    def forward(self, xs: Tensor, counts: Tensor, block: int | None = None) -> Tensor:
        """Args: ``xs (M, D)`` rows sorted by expert; ``counts (E,)`` int rows per expert.

        With ``block``, ``xs`` is the padded layout ``(E * block, D)`` (expert ``e``'s rows
        at ``e * block``) and the experts run as one batched matmul.
        """
        if block is not None:
            return self._padded(xs, block)
        if self.use_grouped(xs):
            return self._grouped(xs, counts)
        return self._looped(xs, counts)

    def _padded(self, xs: Tensor, block: int) -> Tensor:
        x = xs.view(self.n_experts, block, self.d_model)  # (E, C, D)
        h = torch.bmm(x, self.gate_up.transpose(-2, -1).to(x.dtype))  # (E, C, 2H)
        y = torch.bmm(self._act(h), self.down.transpose(-2, -1).to(x.dtype))  # (E, C, D)
        return y.view(-1, self.d_model)

    def _grouped(self, xs: Tensor, counts: Tensor) -> Tensor:
        dtype = compute_dtype(xs)
        offs = counts.cumsum(0).to(torch.int32)  # (E,) end of each expert's slice
        w1 = self.gate_up.to(dtype).transpose(-2, -1)  # (E, D, 2H)
        w2 = self.down.to(dtype).transpose(-2, -1)  # (E, H, D)
        assert GROUPED_MM is not None
        h = GROUPED_MM(xs.to(dtype), w1, offs=offs)  # (M, 2H)
        return GROUPED_MM(self._act(h), w2, offs=offs)  # (M, D)

    def _looped(self, xs: Tensor, counts: Tensor) -> Tensor:
        outs = []
        for e, chunk in enumerate(xs.split(counts.tolist())):  # contiguous slice per expert
            if chunk.shape[0] == 0:
                continue
            outs.append(F.linear(self._act(F.linear(chunk, self.gate_up[e])), self.down[e]))
        if not outs:
            return xs.new_zeros(0, self.d_model)
        return torch.cat(outs)  # (M, D)

    def expert_forward(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` alone on ``x (n, D)`` (reference implementations, tests).

        Plain autograd (no fused activation), so the reference checks the fused path.
        """
        h = F.linear(x, self.gate_up[e])
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return F.linear(h, self.down[e])

    def extra_repr(self) -> str:
        return (
            f"n_experts={self.n_experts}, d_model={self.d_model}, hidden={self.hidden}, "
            f"activation={self.activation}, grouped_mm={self.grouped_mm}"
        )


class ExpertModules(nn.Module):
    """The same ``E`` experts as ``GroupedExperts``, each an ``nn.Module`` of ``nn.Linear``s.

    ``experts.{e}.gate`` / ``.up`` ``(H, D)`` (``gate`` only for SwiGLU) and ``.down``
    ``(D, H)``: layers that adapters wrapping linear modules (splice-lora) can target per
    expert. Same call as ``GroupedExperts``: ``xs (M, D)`` sorted by expert, ``counts (E,)``;
    the experts run as a loop over their contiguous slices (no grouped GEMM).
    """

    def __init__(self, n_experts: int, d_model: int, hidden: int, *, activation: str = "swiglu"):
        super().__init__()
        if activation not in ("swiglu", "gelu"):
            raise ValueError(f"activation={activation!r}, expected 'swiglu' or 'gelu'")
        self.n_experts, self.d_model, self.hidden, self.activation = (
            n_experts,
            d_model,
            hidden,
            activation,
        )
        self.experts = nn.ModuleList(self._expert() for _ in range(n_experts))

    def _expert(self) -> nn.Module:
        e = nn.Module()
        if self.activation == "swiglu":
            e.gate = nn.Linear(self.d_model, self.hidden, bias=False)
        e.up = nn.Linear(self.d_model, self.hidden, bias=False)
        e.down = nn.Linear(self.hidden, self.d_model, bias=False)
        return e

    def __getitem__(self, e: int) -> nn.Module:
        return self.experts[e]

    def expert_forward(self, e: int, x: Tensor) -> Tensor:
        """Expert ``e`` alone on ``x (n, D)``."""
        m = self.experts[e]
        if self.activation == "swiglu":
            h = F.silu(m.gate(x)) * m.up(x)
        else:
            h = F.gelu(m.up(x))
        out: Tensor = m.down(h)
        return out

    def forward(self, xs: Tensor, counts: Tensor) -> Tensor:
        outs = [
            self.expert_forward(e, chunk)
            for e, chunk in enumerate(xs.split(counts.tolist()))  # contiguous slice per expert
            if chunk.shape[0] > 0
        ]
        return torch.cat(outs) if outs else xs.new_zeros(0, self.d_model)
