"""Positional encodings: additive (sinusoidal, learned) and rotary (RoPE)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from splice.interfaces import BuildContext
from splice.nn.configs import (
    LearnedPositionalConfig,
    NoPositionalConfig,
    RoPEConfig,
    SinusoidalPositionalConfig,
)


class AdditivePositional(nn.Module):
    """Base of encodings added to token embeddings: ``forward(positions (B, T)) -> (B, T, D)``."""


class SinusoidalPositional(AdditivePositional):
    """``PE[p, 2i] = sin(p / base^(2i/D))``, ``PE[p, 2i+1] = cos(...)``; not learned."""

    def __init__(self, d_model: int, max_len: int, *, base: float = 10000.0) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        inv = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(base) / d_model)
        )
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(pos * inv)
        table[:, 1::2] = torch.cos(pos * inv)[:, : d_model // 2]
        self.table: Tensor
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table[positions]  # (B, T, D)


class LearnedPositional(AdditivePositional):
    """One learned vector per absolute position (GPT-2's ``wpe``)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * 0.02)

    def forward(self, positions: Tensor) -> Tensor:
        return nn.functional.embedding(positions, self.weight)  # (B, T, D)


class RotaryEmbedding(nn.Module):
    """RoPE: rotates each (even, odd) half-pair of q and k by ``position * theta^(-2i/d)``.

    Uses the "rotate half" layout of Llama / Hugging Face: dims ``[0, d/2)`` pair with
    ``[d/2, d)``. ``rotate(q, k, positions)`` with q ``(B, H, T, d)``, k ``(B, Hkv, T, d)``.
    """

    def __init__(self, head_dim: int, max_len: int, *, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq  # (L, d/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, d)
        # rotate_half(x) * sin == roll(x, d/2) * signed_sin, with the first half of sin
        # negated: one roll instead of chunk + neg + cat per tensor (it shows at decode).
        signed_sin = angles.sin()
        signed_sin[:, : head_dim // 2] *= -1
        self.cos: Tensor
        self.signed_sin: Tensor
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("signed_sin", signed_sin, persistent=False)

    def cos_sin(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``(cos, signed sin)`` of ``positions (B, T)``, each ``(B, 1, T, d)``.

        ``signed sin`` is ``sin`` with its first half negated (see ``rotate``).
        """
        return self.cos[positions].unsqueeze(1), self.signed_sin[positions].unsqueeze(1)

    def rotate(
        self,
        q: Tensor,
        k: Tensor,
        positions: Tensor,
        cos_sin: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``q`` and ``k``; pass ``cos_sin`` (from ``cos_sin(positions)``) to reuse it.

        ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)``, computed
        as ``x * cos + roll(x, d/2) * signed_sin``.
        """
        cos_sin = cos_sin if cos_sin is not None else self.cos_sin(positions)
        return self.rotate_heads(q, positions, cos_sin), self.rotate_heads(k, positions, cos_sin)

    def rotate_heads(
        self, x: Tensor, positions: Tensor, cos_sin: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """Rotate ``x (B, n, T, d)``, any number ``n`` of heads, like ``rotate``.

        One call can rotate the query and key heads together when they sit side by side
        (a fused Q/K/V projection), halving the per-step op count at decode.
        """
        cos, sin = cos_sin if cos_sin is not None else self.cos_sin(positions)  # (B, 1, T, d)
        if cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            rotated: Tensor = _RotateHalf.apply(x, cos, sin)
            return rotated
        return _rotate_half(x, cos, sin)


def _rotate_half(x: Tensor, cos: Tensor, signed_sin: Tensor, sign: float = 1.0) -> Tensor:
    """``x * cos + sign * roll(x, d/2) * signed_sin``: RoPE in the rotate-half layout."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin, value=sign)


class _RotateHalf(torch.autograd.Function):
    """RoPE whose backward is the inverse rotation: three passes, nothing saved of ``x``.

    A rotation's adjoint is the rotation by minus the angle: ``dx = g * cos - roll(g, d/2)
    * signed_sin`` (rolling by d/2 is its own inverse, and ``roll(signed_sin, d/2) =
    -signed_sin`` since both halves hold the same angles). Autograd's version of the forward
    keeps ``roll(x)`` for backward and runs four passes (two products, the roll, the sum).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: Tensor, cos: Tensor, signed_sin: Tensor
    ) -> Tensor:
        ctx.save_for_backward(cos, signed_sin)
        return _rotate_half(x, cos, signed_sin)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor, None, None]:
        cos, signed_sin = ctx.saved_tensors  # type: ignore[attr-defined]
        return _rotate_half(grad, cos, signed_sin, sign=-1.0), None, None


def interleaved_to_half(x: Tensor, dim: int = -1) -> Tensor:
    """Reorder RoPE pairs along ``dim`` from interleaved ``(x0, x1), (x2, x3), ...`` (GPT-J,
    DeepSeek) to the rotate-half layout ``x0, x2, ..., x1, x3, ...`` this module rotates.

    Applied to the rows of a projection that feeds RoPE (on both the query and the key
    side), it makes rotate-half RoPE compute what interleaved RoPE computed: dot products
    are unchanged by the same permutation of both operands.
    """
    n = x.shape[dim]
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).to(x.device)
    return x.index_select(dim, order)


def half_to_interleaved(x: Tensor, dim: int = -1) -> Tensor:
    """The inverse of :func:`interleaved_to_half`."""
    n = x.shape[dim]
    order = torch.stack([torch.arange(n // 2), torch.arange(n // 2, n)], dim=1).reshape(-1)
    return x.index_select(dim, order.to(x.device))


class NoPositional(AdditivePositional):
    """Adds nothing."""

    def forward(self, positions: Tensor) -> Tensor:  # pragma: no cover - never called
        raise RuntimeError("NoPositional is skipped by the model")


def build_none(config: NoPositionalConfig, ctx: BuildContext) -> nn.Module:
    return NoPositional()


def build_sinusoidal(config: SinusoidalPositionalConfig, ctx: BuildContext) -> nn.Module:
    return SinusoidalPositional(ctx.d_model, ctx.max_seq_len, base=config.base)


def build_learned(config: LearnedPositionalConfig, ctx: BuildContext) -> nn.Module:
    return LearnedPositional(ctx.d_model, ctx.max_seq_len)


def build_rope(config: RoPEConfig, ctx: BuildContext) -> nn.Module:
    head_dim = int(ctx.extra["head_dim"])
    return RotaryEmbedding(head_dim, ctx.max_seq_len, theta=config.theta)
