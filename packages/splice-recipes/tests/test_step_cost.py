"""``splice_recipes.step_cost``: FLOPs of a LoRA step grow with the rank by the adapter's
matmuls, a timed step trains only the trainable parameters, and the timing's arguments."""

from __future__ import annotations

import pytest
import torch
from splice.models.build import build_model
from splice_lora import LoRAConfig, apply_lora
from splice_recipes.common import tiny_decoder
from splice_recipes.step_cost import median_step_ms, step_flops, training_step

D, T, B = 64, 16, 4


def _model(rank: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(tiny_decoder(52, max_seq_len=T))
    if rank is not None:
        apply_lora(model, LoRAConfig(r=rank, alpha=2.0 * rank, targets="all-linear"))
    return model


def test_lora_flops_grow_with_rank_by_the_adapter_matmuls():
    ids = torch.randint(0, 52, (B, T), generator=torch.Generator().manual_seed(0))
    f1, f2, f8 = (step_flops(_model(r), ids) for r in (1, 2, 8))
    assert f1 < f2 < f8
    # a rank-r adapter on an (out, in) linear adds 2 * tokens * r * (in + out) forward FLOPs,
    # times 3 for forward + backward (input and weight gradients); linear in r
    linears = [(D, D)] * 4 + [(4 * D, D), (D, 4 * D)]  # q, k, v, o, up, down; per layer
    per_rank = 3 * 2 * B * T * 2 * sum(i + o for o, i in linears)  # 2 layers
    assert f8 - f2 == pytest.approx(6 * per_rank, rel=0.05)
    assert f2 - f1 == pytest.approx(per_rank, rel=0.05)


def test_training_step_moves_only_trainable_weights_and_timing_returns_medians():
    model = _model(2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 52, (B, T), generator=torch.Generator().manual_seed(1))
    training_step(model, opt, ids)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], w) for n, w in frozen.items())
    assert all(not torch.equal(params[n], w) for n, w in lora.items())  # B starts at zero
    assert all(p.grad is None for p in model.parameters())
    ms = median_step_ms({"a": (model, opt)}, ids, rounds=3, warmup=1)
    assert set(ms) == {"a"} and ms["a"] > 0
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        median_step_ms({"a": (model, opt)}, ids, rounds=0)
