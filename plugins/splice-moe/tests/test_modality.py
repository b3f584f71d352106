"""Modality-isolated experts: text tokens reach only text experts, image tokens only image
experts, the shared experts both; the per-modality balancing loss and the router
orthogonal loss (ERNIE 4.5)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from splice.nn.modality import token_modality
from splice_moe.configs import MoEConfig
from splice_moe.layer import MoELayer
from splice_moe.modality import modality_balance_loss, router_orthogonal_loss

D = 16


def _layer(**kw):
    torch.manual_seed(0)
    cfg = MoEConfig(
        n_experts=7, top_k=2, modality_experts=[4, 3], n_shared=1, expert_hidden=8, **kw
    )
    return MoELayer(cfg, D)


def test_tokens_reach_only_their_modality_experts():
    layer = _layer().train()
    x = torch.randn(2, 9, D)
    ids = (torch.rand(2, 9, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    with token_modality(ids):
        routing = layer.router(x.reshape(-1, D), None)  # unrestricted, for contrast
        layer(x)
    stats = layer.stats(reset=True)
    assert sum(stats[f"load.{e}"] for e in range(7)) == pytest.approx(1.0)
    from splice_moe.modality import allowed_experts

    allowed = allowed_experts(ids, [4, 3])
    restricted = layer.router(x.reshape(-1, D), allowed)
    flat = ids.reshape(-1)
    assert (restricted.top_idx[flat == 0] < 4).all() and (restricted.top_idx[flat == 1] >= 4).all()
    assert (routing.top_idx[flat == 0] >= 4).any()  # without isolation text would use them
    # softmax over the modality's own experts: the other experts get exactly zero
    assert restricted.scores[flat == 0][:, 4:].abs().max() == 0
    assert restricted.scores.sum(-1).allclose(torch.ones(18))


def test_output_of_image_tokens_does_not_depend_on_text_experts():
    layer = _layer().eval()
    x = torch.randn(1, 6, D)
    ids = torch.tensor([[0, 0, 1, 1, 1, 0]])
    with token_modality(ids), torch.no_grad():
        before = layer(x).hidden
        layer.experts.gate_up[:4].mul_(3.0)  # change only the text experts
        after = layer(x).hidden
    image = ids[0] == 1
    torch.testing.assert_close(after[0, image], before[0, image])
    assert (after[0, ~image] - before[0, ~image]).abs().max() > 1e-4


def test_no_ids_means_all_text():
    layer = _layer().eval()
    x = torch.randn(1, 5, D)
    with torch.no_grad():
        plain = layer(x).hidden
        with token_modality(torch.zeros(1, 5, dtype=torch.long)):
            text = layer(x).hidden
    torch.testing.assert_close(plain, text)


def test_modality_balance_loss_is_per_modality():
    scores = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.9, 0.1]])
    top = torch.tensor([[0], [1], [2]])
    mod = torch.tensor([0, 0, 1])
    # text: 2 experts perfectly balanced (1.0); image: all to expert 2 with p 0.9 (2 * 0.9)
    got = modality_balance_loss(scores, top, mod, [2, 2], normalize=False)
    assert got.item() == pytest.approx(1.0 + 1.8)


def test_router_orthogonal_loss_and_its_gradient():
    assert router_orthogonal_loss(torch.eye(3, 5)).item() == pytest.approx(0.0)
    same = torch.ones(2, 4)  # two identical directions: off-diagonal 1, twice, over 4 entries
    assert router_orthogonal_loss(same).item() == pytest.approx(0.5)
    layer = _layer(orthogonal_loss_weight=0.5, aux_loss_weight=0.01).train()
    with token_modality(torch.tensor([[0, 1, 1, 0]])):
        out = layer(torch.randn(1, 4, D))
    out.aux_loss.backward()
    assert layer.router.gate.weight.grad.abs().sum() > 0


def test_bad_modality_settings_are_named():
    with pytest.raises(
        ValidationError, match=r"modality_experts=\[4, 2\] sums to 6, not n_experts=7"
    ):
        MoEConfig(n_experts=7, top_k=2, modality_experts=[4, 2])
    with pytest.raises(ValidationError, match="top_k=3 exceeds the 2 experts of a modality"):
        MoEConfig(n_experts=6, top_k=3, modality_experts=[4, 2])
    layer = _layer()
    with (
        token_modality(torch.full((1, 3), 2)),
        pytest.raises(ValueError, match="modality 2 has no experts"),
    ):
        layer(torch.randn(1, 3, D))


def test_orthogonal_loss_is_added_under_either_aux_loss_scope():
    torch.manual_seed(0)
    x = torch.randn(1, 6, D)
    totals = {}
    for ortho in (0.0, 0.5):
        for scope in ("layer", "model"):
            cfg = MoEConfig(n_experts=4, top_k=2, expert_hidden=8, aux_loss_weight=0.01,
                            aux_loss_scope=scope, orthogonal_loss_weight=ortho)  # fmt: skip
            torch.manual_seed(0)
            layer = MoELayer(cfg, D).train()
            aux = layer(x).aux_loss
            totals[scope, ortho] = aux if scope == "layer" else aux.sums[-1]  # the per-layer extra
    expected = 0.5 * router_orthogonal_loss(layer.router.gate.weight)
    torch.testing.assert_close(totals["layer", 0.5] - totals["layer", 0.0], expected)
    torch.testing.assert_close(totals["model", 0.5] - totals["model", 0.0], expected)
