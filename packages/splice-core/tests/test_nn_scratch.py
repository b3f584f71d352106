"""Scratch buffers: reused only when no tensor shares them; the fused loss stays exact."""

from __future__ import annotations

import torch
from splice.nn.scratch import release_scratch, scratch
from splice.objectives.chunked_ce import linear_cross_entropy
from torch import nn

CPU = torch.device("cpu")


def test_reused_when_free_fresh_while_any_view_lives() -> None:
    release_scratch()
    a = scratch("t", (4, 8), torch.float32, CPU)
    ptr = a.data_ptr()
    assert scratch("t", (2, 8), torch.float32, CPU).data_ptr() != ptr  # `a` is alive
    kept = a.T[1:]  # a derived view keeps the memory busy after `a` itself is gone
    del a
    assert scratch("t", (4, 8), torch.float32, CPU).data_ptr() != ptr
    del kept
    b = scratch("t", (3, 8), torch.float32, CPU)  # smaller: same memory, new shape
    assert b.data_ptr() == ptr and b.shape == (3, 8)
    del b
    c = scratch("t", (16, 8), torch.float32, CPU)  # larger: grows
    assert c.shape == (16, 8) and c.is_contiguous()
    assert scratch("t", (4, 8), torch.bfloat16, CPU).dtype == torch.bfloat16  # own slot
    release_scratch()


def test_fused_loss_with_two_graphs_alive_and_repeated_steps() -> None:
    """Two forwards before one backward (chosen/rejected in DPO) must not share logits."""
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=False)
    hidden = [torch.randn(6, 16, requires_grad=True) for _ in range(2)]
    targets = [torch.randint(0, 50, (6,)) for _ in range(2)]

    def reference(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = hidden[i].detach().requires_grad_()
        loss = nn.functional.cross_entropy(head(h), targets[i], reduction="sum")
        gh, gw = torch.autograd.grad(loss, [h, head.weight])
        return loss.detach(), gh, gw

    for precision in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
            for _ in range(2):  # a second step reuses the first step's buffers
                l0 = linear_cross_entropy(hidden[0], head, targets[0])
                l1 = linear_cross_entropy(hidden[1], head, targets[1])
                g0, g1, gw = torch.autograd.grad(l0 - 2 * l1, [*hidden, head.weight])
                want_w = torch.zeros_like(gw)
                tol = 1e-5 if precision == torch.float32 else 5e-2
                for i, (loss, grad, sign) in enumerate(((l0, g0, 1.0), (l1, g1, -2.0))):
                    want_loss, want_grad, want_gw = reference(i)
                    torch.testing.assert_close(loss, want_loss, rtol=tol, atol=tol)
                    torch.testing.assert_close(grad, sign * want_grad, rtol=tol, atol=tol)
                    want_w += sign * want_gw
                assert gw.dtype == torch.float32
                torch.testing.assert_close(gw, want_w, rtol=tol, atol=tol)
