"""Router: float32 under bf16 autocast, top-k weights, selection bias, training-only noise."""

from __future__ import annotations

import pytest
import torch
from splice_moe.balancing import load_balancing_loss, router_entropy, router_z_loss
from splice_moe.configs import MoEConfig
from splice_moe.layer import MoELayer
from splice_moe.router import Router


def test_router_stays_float32_under_bf16_autocast_and_the_layer_runs():
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(n_experts=4, top_k=2, n_shared=1), 16)
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = layer.router(x.reshape(-1, 16))
        out = layer(x)
    assert r.logits.dtype == r.top_weight.dtype == torch.float32
    exact = x.reshape(-1, 16) @ layer.router.gate.weight.T
    torch.testing.assert_close(r.logits, exact)  # not rounded to bf16
    assert out.hidden.shape == x.shape and out.hidden.dtype == torch.bfloat16
    torch.testing.assert_close(out.hidden.float(), layer(x).hidden, atol=0.05, rtol=0.05)


def test_softmax_top_k_renormalised_or_raw():
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    for normalize in (True, False):
        r = Router(8, 5, 3, normalize_top_k=normalize)
        r(x)
        out = r(x)
        probs = (x @ r.gate.weight.T).softmax(-1)
        top = probs.topk(3, dim=-1)
        assert torch.equal(out.top_idx, top.indices)
        want = top.values / top.values.sum(-1, keepdim=True) if normalize else top.values
        torch.testing.assert_close(out.top_weight, want)
        assert out.top_idx.unique(dim=-1).shape[-1] == 3  # distinct experts per token


def test_sigmoid_scores_and_route_scale():
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    r = Router(8, 6, 2, scoring="sigmoid", route_scale=2.0)
    out = r(x)
    torch.testing.assert_close(out.scores, (x @ r.gate.weight.T).sigmoid())
    torch.testing.assert_close(out.top_weight.sum(-1), torch.full((4,), 2.0))


def test_selection_bias_changes_the_choice_not_the_weights():
    torch.manual_seed(0)
    x = torch.randn(10, 8)
    r = Router(8, 4, 1, normalize_top_k=False, selection_bias=True)
    base = r(x)
    r.expert_bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # expert 2 always chosen
    biased = r(x)
    assert biased.top_idx.flatten().tolist() == [2] * 10
    torch.testing.assert_close(biased.top_weight[:, 0], base.scores[:, 2])  # unbiased score
    assert "expert_bias" in r.state_dict()  # saved with the model


def test_jitter_and_noise_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(32, 8)
    r = Router(8, 4, 2, jitter=0.2, noise=1.0)
    r.eval()
    torch.testing.assert_close(r(x).logits, r(x).logits)
    r.train()
    assert not torch.allclose(r(x).logits, r(x).logits)


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
def test_accumulated_statistics_equal_the_direct_formulas(scoring):
    # Two micro-batches of different sizes: every statistic is a token-weighted mean.
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(n_experts=4, top_k=2, scoring=scoring, aux_loss_weight=0.1), 8)
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 1.0)
    xs = [torch.randn(1, 5, 8), torch.randn(2, 7, 8)]
    want = {"router_entropy": 0.0, "lb_loss": 0.0, "z_loss": 0.0}
    routed = torch.zeros(4)
    for x in xs:
        layer(x)
        r = layer.router(x.reshape(-1, 8))
        load = torch.bincount(r.top_idx.reshape(-1), minlength=4)
        routed += load
        n = r.scores.shape[0] / 19
        want["router_entropy"] += router_entropy(r.scores).item() * n
        want["lb_loss"] += (
            load_balancing_loss(r.scores, load, normalize=scoring == "sigmoid").item() * n
        )
        want["z_loss"] += router_z_loss(r.logits).item() * n
    got = layer.stats(reset=True)
    for key, value in want.items():
        assert got[key].item() == pytest.approx(value, rel=1e-5), key
    for i in range(4):
        assert got[f"load.{i}"].item() == pytest.approx((routed[i] / routed.sum()).item())
    assert got["dropped_frac"].item() == 0.0
    assert layer.stats() == {}
