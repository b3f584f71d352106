"""Run several ``nn.Linear`` layers that read the same input as one matmul, at inference.

Keeping Q/K/V (or gate/up) as separate ``nn.Linear`` modules keeps checkpoints in the
Hugging Face layout and lets adapters wrap one projection alone (LoRA on q and v only).
At decode time, though, each small matmul pays a fixed per-call cost, so with gradients
off we concatenate the weights once and run one larger matmul. The concatenation is
cached and rebuilt whenever any weight changes (optimizer step, load, in-place edit:
each bumps the tensor's version counter), so it can never serve stale weights.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class FusedLinears:
    """``outputs(x) -> [linear_i(x) for i]``, fused into one matmul when gradients are off.

    Falls back to calling each module when gradients are on (training) or when a module
    is not a plain ``nn.Linear`` (e.g. wrapped by an adapter or quantized).
    """

    def __init__(self, *linears: nn.Module) -> None:
        self.linears = linears
        self._key: tuple[int, ...] | None = None
        self._weight: Tensor | None = None
        self._bias: Tensor | None = None

    def _fusable(self) -> bool:
        return not torch.is_grad_enabled() and all(type(m) is nn.Linear for m in self.linears)

    def _plain(self) -> tuple[nn.Linear, ...]:
        # Only called on the fused path, after _fusable() checked every type is nn.Linear.
        return cast("tuple[nn.Linear, ...]", self.linears)

    def _fused(self) -> tuple[Tensor, Tensor | None]:
        linears = self._plain()
        params = [p for m in linears for p in (m.weight, m.bias) if p is not None]
        key = tuple(v for p in params for v in (p._version, p.data_ptr()))
        if key != self._key or self._weight is None:
            self._weight = torch.cat([m.weight for m in linears])  # (sum out, in)
            biases: list[Tensor | None] = [m.bias for m in linears]
            if all(b is None for b in biases):
                self._bias = None
            else:
                self._bias = torch.cat(
                    [
                        b if b is not None else m.weight.new_zeros(m.weight.shape[0])
                        for m, b in zip(linears, biases)
                    ]
                )
            self._key = key
        return self._weight, self._bias

    def __call__(self, x: Tensor) -> list[Tensor]:
        if not self._fusable():
            return [m(x) for m in self.linears]
        weight, bias = self._fused()
        sizes = [m.weight.shape[0] for m in self._plain()]
        return list(F.linear(x, weight, bias).split_with_sizes(sizes, dim=-1))
