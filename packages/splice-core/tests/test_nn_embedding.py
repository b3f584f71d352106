"""splice's Embedding: nn.Embedding's values and gradients, with reused gradient memory."""

from __future__ import annotations

import torch
from splice.nn.embedding import Embedding
from torch import nn


def test_same_output_and_gradient_as_nn_embedding_across_steps() -> None:
    torch.manual_seed(0)
    ours = Embedding(50, 8)
    ref = nn.Embedding(50, 8)
    ref.load_state_dict(ours.state_dict())
    pointers = set()
    for _ in range(3):
        ids = torch.randint(0, 50, (4, 9))
        ids[0, :3] = 7  # repeated ids are summed
        grad = torch.randn(4, 9, 8)
        y, y_ref = ours(ids), ref(ids)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        y.backward(grad)
        y_ref.backward(grad)
        assert ours.weight.grad is not None and ref.weight.grad is not None
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-6, atol=1e-6)
        pointers.add(ours.weight.grad.data_ptr())
        ours.weight.grad = None
        ref.weight.grad = None
    assert len(pointers) == 1  # the gradient memory was reused, not reallocated


def test_accumulates_into_an_existing_gradient_and_is_deterministic() -> None:
    torch.manual_seed(0)
    emb = Embedding(30, 4)
    ids = torch.randint(0, 30, (64,))
    grad = torch.randn(64, 4)
    runs = []
    for _ in range(2):
        emb.weight.grad = None
        emb(ids).backward(grad)
        emb(ids).backward(grad)  # a second micro-batch adds to .grad
        assert emb.weight.grad is not None
        runs.append(emb.weight.grad.clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    want = torch.zeros(30, 4).index_add_(0, ids, grad) * 2
    torch.testing.assert_close(runs[0], want, rtol=1e-6, atol=1e-6)


def test_options_with_their_own_backward_use_nn_embedding() -> None:
    emb = Embedding(10, 3, padding_idx=0)
    ids = torch.tensor([0, 1, 1])
    emb(ids).sum().backward()
    assert emb.weight.grad is not None
    assert torch.count_nonzero(emb.weight.grad[0]) == 0  # padding row gets no gradient
    torch.testing.assert_close(emb.weight.grad[1], torch.full((3,), 2.0))
