"""MoE inside models: per-layer overrides, the encoder-decoder, training with the Trainer
(balancing terms and routing metrics in metrics.jsonl, the aux-loss-free bias updated
after each step and saved in checkpoints)."""

from __future__ import annotations

import json

import pytest
import torch
from splice.checkpoint.manager import load_model_weights
from splice.models.build import build_model
from splice.models.configs import EncoderDecoderConfig
from splice.objectives.sft import SFTObjective
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.trainer import Trainer
from splice_moe.configs import MoEConfig
from splice_moe.layer import MoELayer
from splice_moe.testing import D, V, block, copy_task, moe_decoder

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


def test_moe_on_every_other_layer_through_overrides():
    torch.manual_seed(0)
    model = build_model(
        moe_decoder({"n_experts": 4, "aux_loss_weight": 0.01}, n_layers=4, every_other=True)
    )
    kinds = [type(b.ffn).__name__ for b in model.blocks]
    assert kinds == ["SwiGLU", "MoELayer", "SwiGLU", "MoELayer"]
    ids = torch.randint(0, V, (2, 7))
    out = model(ids)
    assert out.logits.shape == (2, 7, V)
    # The aux loss is the sum over the two MoE layers, each Switch loss >= 1 times 0.01.
    assert out.aux_loss is not None and out.aux_loss.item() >= 0.02 - 1e-6
    out.aux_loss.backward()
    assert model.blocks[1].ffn.router.gate.weight.grad.abs().sum() > 0


def test_moe_in_encoder_and_decoder_reports_both_aux_losses():
    torch.manual_seed(0)
    moe = {"type": "moe", "n_experts": 4, "top_k": 1, "z_loss_weight": 1.0}
    cfg = EncoderDecoderConfig(
        vocab_size=V, d_model=D, encoder_layers=1, decoder_layers=1,
        block=block(moe), encoder_block=block(moe),
        cross_attention={"type": "cross_attention", "n_heads": 2},
        max_source_len=16, max_target_len=16,
    )  # fmt: skip
    model = build_model(cfg)
    src, tgt = torch.randint(0, V, (2, 6)), torch.randint(0, V, (2, 5))
    out = model(tgt, encoder_input_ids=src)
    assert out.logits.shape == (2, 5, V)
    enc_moe, dec_moe = model.encoder.blocks[0].ffn, model.decoder.blocks[0].ffn
    assert isinstance(enc_moe, MoELayer) and isinstance(dec_moe, MoELayer)

    # z-loss of each layer recomputed by hand: their sum is the model's aux loss.
    def z(layer, x):
        logits = layer.router(x.reshape(-1, D)).logits
        return torch.logsumexp(logits, -1).square().mean()

    seen = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, a, k=k: seen.__setitem__(k, a[0]))
        for k, m in (("enc", enc_moe), ("dec", dec_moe))
    ]
    out = model(tgt, encoder_input_ids=src)
    for h in hooks:
        h.remove()
    expected = z(enc_moe, seen["enc"]) + z(dec_moe, seen["dec"])
    torch.testing.assert_close(out.aux_loss, expected)
    out.aux_loss.backward()
    assert enc_moe.router.gate.weight.grad.abs().sum() > 0  # the encoder's router learns too


@pytest.mark.parametrize("balance", ["aux", "aux_free"])
def test_training_logs_routing_metrics_and_updates_the_bias(tmp_path, balance):
    torch.manual_seed(0)
    moe = {"n_experts": 4, "top_k": 2, "n_shared": 1, "capacity_factor": 1.0}
    moe |= (
        {"aux_loss_weight": 0.01, "z_loss_weight": 0.001}
        if balance == "aux"
        else {"bias_update_rate": 0.01}
    )
    model = build_model(moe_decoder(moe, every_other=True))
    cfg = TrainConfig(steps=6, batch_size=8, progress=False, log_every=1, checkpoint_every=6,
                      optimizer=OptimizerConfig(lr=3e-3))  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    Trainer(model, SFTObjective(), copy_task(), cfg, run_dir=tmp_path).fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert len(train) == 6
    rec = train[-1]
    prefix = "blocks.1.ffn."
    loads = [rec[f"{prefix}load.{i}"] for i in range(4)]
    assert sum(loads) == pytest.approx(1.0, abs=1e-5)
    assert rec[f"{prefix}load_max_mean"] == pytest.approx(max(loads) / (1 / 4), rel=1e-4)
    assert 0.0 <= rec[f"{prefix}dropped_frac"] < 1.0
    assert 0.0 < rec[f"{prefix}router_entropy"] <= torch.log(torch.tensor(4.0)).item() + 1e-5
    assert rec[f"{prefix}lb_loss"] >= 1.0 - 1e-5  # Switch loss is >= 1, = 1 when balanced
    assert rec[f"{prefix}z_loss"] > 0.0
    layer = model.blocks[1].ffn
    if balance == "aux":
        assert rec["aux_loss"] > 0.0  # the objective's weighted aux term
        assert layer.router.expert_bias is None
    else:
        bias = layer.router.expert_bias
        # 6 steps of +-0.01 each: the bias moved and is an integer multiple of the rate.
        assert bias.abs().max() > 0 and rec[f"{prefix}bias_spread"] > 0
        steps = bias / 0.01
        torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
        fresh = build_model(moe_decoder(moe, every_other=True))
        load_model_weights(fresh, tmp_path)  # the latest checkpoint holds the bias
        torch.testing.assert_close(fresh.blocks[1].ffn.router.expert_bias, bias)


def test_bias_update_moves_toward_balance():
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(n_experts=4, top_k=1, bias_update_rate=0.05), D).train()
    with torch.no_grad():
        layer.router.gate.weight.normal_(0, 0.5)
        layer.router.gate.weight[0] += 0.5  # expert 0 wins for most (shifted) inputs
    x = torch.randn(1, 200, D) + 0.5
    layer(x)
    metrics = layer.after_optimizer_step()
    first = metrics["load_max_mean"].item()
    assert first > 2.0 and max(range(4), key=lambda i: metrics[f"load.{i}"].item()) == 0
    assert layer.router.expert_bias[0].item() == pytest.approx(-0.05)  # over-loaded: lowered
    assert layer.stats() == {}  # reset after the step
    for _ in range(40):  # keep routing and stepping: the bias spreads the load
        layer(x)
        layer.after_optimizer_step()
    layer(x)
    assert layer.stats()["load_max_mean"].item() < 1.5


def test_model_scope_pools_the_balancing_loss_over_layers():
    """``aux_loss_scope="model"``: one loss from every MoE layer's assignments and probabilities."""
    from splice.interfaces import BuildContext
    from splice.testing.checks import check_gradients

    torch.manual_seed(0)
    ffn = {"n_experts": 4, "aux_loss_weight": 0.1, "z_loss_weight": 0.01, "aux_loss_scope": "model"}
    model = build_model(moe_decoder(ffn, n_layers=4, every_other=True))
    moe = [b.ffn for b in model.blocks if isinstance(b.ffn, MoELayer)]
    seen = []
    hooks = [m.router.register_forward_hook(lambda _m, _i, out: seen.append(out)) for m in moe]
    out = model(torch.randint(0, V, (2, 7)))
    for h in hooks:
        h.remove()
    counts = sum(torch.bincount(r.top_idx.flatten(), minlength=4) for r in seen).float()
    probs = sum(r.scores.sum(0) for r in seen)
    rows = sum(r.scores.shape[0] for r in seen)
    z = sum(torch.logsumexp(r.logits, -1).square().mean() for r in seen)
    want = 0.1 * 4 * (counts * probs).sum() / rows**2 + 0.01 * z
    torch.testing.assert_close(out.aux_loss, want)
    # The conformance checks accept a pooled aux loss (a pool of one layer).
    check_gradients(MoEConfig(**ffn), BuildContext(d_model=D), may_skip=("experts.*",))
