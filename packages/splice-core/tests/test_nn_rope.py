"""RotaryEmbedding: the rotate-half formula, and the training path's inverse-rotation backward."""

from __future__ import annotations

import pytest
import torch
from splice.nn.positional import RotaryEmbedding


def _reference(x: torch.Tensor, positions: torch.Tensor, d: int, theta: float = 10000.0):
    """Llama / Hugging Face RoPE written out: ``x * cos + rotate_half(x) * sin``."""
    # float32 tables, as the module builds them (their rounding is not under test)
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, d/2)
    emb = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, d)
    cos, sin = emb.cos().to(torch.float64), emb.sin().to(torch.float64)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _inputs(requires_grad: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, generator=g, requires_grad=requires_grad)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 3, 9, 0, 2]])
    rope = RotaryEmbedding(8, 16).to(torch.float64)
    return rope, x, positions


@pytest.mark.parametrize("grad", [False, True], ids=["no grad", "autograd function"])
def test_rotation_matches_the_written_out_formula(grad: bool) -> None:
    rope, x, positions = _inputs(requires_grad=grad)
    out = rope.rotate_heads(x, positions)
    torch.testing.assert_close(out, _reference(x, positions, 8), rtol=0, atol=1e-12)


def test_backward_is_the_inverse_rotation() -> None:
    rope, x, positions = _inputs(requires_grad=True)
    g = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(rope.rotate_heads(x, positions), x, g)
    (expected,) = torch.autograd.grad(_reference(x, positions, 8), x, g)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: rope.rotate_heads(t, positions), (x,))


def test_bf16_training_path_matches_the_eager_formula() -> None:
    rope, x, positions = _inputs(requires_grad=False)
    xb = x.to(torch.bfloat16).requires_grad_()
    rope = rope.to(torch.float32)
    out = rope.rotate_heads(xb, positions)  # cos/sin cast to bf16, as under autocast
    with torch.no_grad():
        plain = rope.rotate_heads(xb, positions)
    assert out.dtype == torch.bfloat16 and torch.equal(out, plain)
    out.sum().backward()
    assert xb.grad is not None and xb.grad.dtype == torch.bfloat16
