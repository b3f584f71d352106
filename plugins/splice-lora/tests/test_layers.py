"""LoRA layers on a tiny decoder: the delta's formula, scaling, inits, DoRA, embedding LoRA,
merge/unmerge, several adapters, and the core's adapters-off reference."""

from __future__ import annotations

import math

import pytest
import torch
from splice.adapters import AdapterLayer, adapters_disabled, has_adapters
from splice.rl.reference import ReferenceModel
from splice_lora import (
    LoRAConfig,
    LoRALinear,
    adapter_names,
    adapter_state_dict,
    apply_lora,
    lora_layers,
    merge_adapter,
    merge_and_unload,
    set_active_adapter,
    unmerge_adapter,
)
from torch import nn


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def test_fresh_adapter_is_the_base_and_only_the_adapter_trains(make_model, ids):
    model = make_model()
    base = logits(model, ids)
    apply_lora(model, LoRAConfig())
    assert torch.equal(logits(model, ids), base)  # B = 0
    wrapped = sorted(n for n, _ in lora_layers(model))
    assert wrapped == [f"blocks.{i}.mixer.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    model.train()
    model(ids).logits.square().mean().backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    b_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert all(g.abs().sum() > 0 for g in b_grads)


@pytest.mark.parametrize("rslora", [False, True])
def test_delta_is_scaled_b_a_x(rslora):
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    x = torch.randn(3, 5, 12)
    want_base = base(x)
    layer = LoRALinear(base)
    cfg = LoRAConfig(r=4, alpha=6.0, rslora=rslora)
    from splice_lora.adapter import _spec

    layer.add_adapter("default", _spec(cfg))
    layer.active_adapter = "default"
    nn.init.normal_(layer.lora_B["default"].weight)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s = 6.0 / (math.sqrt(4) if rslora else 4)
    assert cfg.scaling == pytest.approx(s)
    torch.testing.assert_close(layer(x), want_base + s * x @ a.T @ b.T, atol=1e-5, rtol=1e-5)


def test_kaiming_and_gaussian_inits(make_model):
    model = apply_lora(make_model(), LoRAConfig(r=4, init="gaussian"))
    layer = dict(lora_layers(model))["blocks.0.mixer.q_proj"]
    a = layer.lora_A["default"].weight
    assert abs(float(a.detach().std()) - 1 / 4) < 0.08 and torch.all(
        layer.lora_B["default"].weight == 0
    )
    model = apply_lora(make_model(), LoRAConfig(r=4))
    a = dict(lora_layers(model))["blocks.0.mixer.q_proj"].lora_A["default"].weight.detach()
    bound = 1 / math.sqrt(16)  # Kaiming-uniform with a=sqrt(5): U(-1/sqrt(in), 1/sqrt(in))
    assert float(a.abs().max()) <= bound and float(a.abs().max()) > 0.5 * bound


def test_pissa_starts_at_the_base_with_the_top_singular_directions(make_model, ids):
    model = make_model()
    base_logits = logits(model, ids)
    w = model.blocks[0].mixer.q_proj.weight.detach().clone()
    apply_lora(model, LoRAConfig(r=3, alpha=6.0, init="pissa", targets="q"))
    torch.testing.assert_close(logits(model, ids), base_logits, atol=1e-5, rtol=1e-5)
    layer = model.blocks[0].mixer.q_proj
    delta = layer.delta_weight("default").detach()
    u, s, vh = torch.linalg.svd(w)
    torch.testing.assert_close(delta, u[:, :3] @ torch.diag(s[:3]) @ vh[:3], atol=1e-5, rtol=1e-4)
    residual = layer.base_layer.weight.detach()
    torch.testing.assert_close(residual + delta, w, atol=1e-6, rtol=0)
    # The residual has no component left along the top directions.
    assert float((u[:, :3].T @ residual @ vh[:3].T).abs().max()) < 1e-5


def test_dora_matches_its_formula_and_trains_the_magnitude(make_model, ids, randomize):
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    x = torch.randn(4, 8)
    from splice_lora.adapter import _spec

    layer = LoRALinear(base)
    cfg = LoRAConfig(r=2, alpha=4.0, dora=True)
    layer.add_adapter("default", _spec(cfg))
    layer.active_adapter = "default"
    torch.testing.assert_close(layer(x), base(x), atol=1e-6, rtol=1e-6)  # m = ||W|| at init
    randomize(layer)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"]
    d = base.weight + 2.0 * b @ a
    want = x @ (m[:, None] * d / d.norm(dim=1, keepdim=True)).T + base.bias
    got = layer(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0


def test_embedding_lora(make_model, ids, randomize):
    model = make_model()
    base_embed = model.embed.weight.detach().clone()
    apply_lora(model, LoRAConfig(r=2, alpha=2.0, targets="embed,q"))
    layer = model.embed
    assert torch.equal(layer(ids), base_embed[ids])  # A = 0 at init
    randomize(model)
    a, b = layer.lora_embedding_A["default"], layer.lora_embedding_B["default"]
    torch.testing.assert_close(layer(ids), base_embed[ids] + ((b @ a).T)[ids], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "cfg",
    [
        LoRAConfig(r=4, targets="all-linear"),
        LoRAConfig(r=4, targets="all-linear", dora=True),
        LoRAConfig(r=2, targets="embed,q,v,down"),
        LoRAConfig(r=4, targets="q,k", init="pissa"),
    ],
    ids=["lora", "dora", "embedding", "pissa"],
)
def test_merge_equals_adapter_forward_and_unmerge_restores_w(make_model, ids, randomize, cfg):
    model = make_model(tie_embeddings=False)
    apply_lora(model, cfg)
    randomize(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    with_adapter = logits(model, ids)
    merge_adapter(model)
    merged = logits(model, ids)
    assert (merged - with_adapter).abs().max() <= 1e-5
    changed = [
        n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])
    ]
    assert changed  # the merge did write into the base weights
    unmerge_adapter(model)
    for n, p in model.named_parameters():
        if n in before:
            assert (p - before[n]).abs().max() <= 1e-6, n
    torch.testing.assert_close(logits(model, ids), with_adapter, atol=1e-6, rtol=0)
    plain = merge_and_unload(model)
    assert not has_adapters(plain) and not lora_layers(plain)
    assert (logits(plain, ids) - with_adapter).abs().max() <= 1e-5


def test_merging_a_tied_embedding_is_refused(make_model, randomize):
    model = apply_lora(make_model(), LoRAConfig(r=2, targets="embed"))
    with pytest.raises(ValueError, match=r"'embed': its weight is tied to \['lm_head.weight'\]"):
        merge_adapter(model)


def test_lora_is_an_adapter_layer_and_its_own_reference(make_model, ids, randomize):
    model = make_model()
    base = logits(model, ids)
    apply_lora(model, LoRAConfig(targets="all-linear"))
    randomize(model)
    adapted = logits(model, ids)
    assert (adapted - base).abs().max() > 1e-3
    assert all(isinstance(layer, AdapterLayer) for _, layer in lora_layers(model))
    with adapters_disabled(model):
        assert torch.equal(logits(model, ids), base)
    assert torch.equal(logits(model, ids), adapted)  # back on after the block
    ref = ReferenceModel(model)
    assert ref.mode == "adapters_off" and ref.shares_weights
    mask = torch.ones_like(ids, dtype=torch.bool)
    want = torch.log_softmax(base[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(ref.token_logprobs(ids, mask), want, atol=1e-5, rtol=1e-5)
    merge_adapter(model)
    with pytest.raises(RuntimeError, match="unmerge before disabling"), adapters_disabled(model):
        pass


def test_named_adapters_switch(make_model, ids, randomize):
    model = make_model()
    base = logits(model, ids)
    apply_lora(model, LoRAConfig(name="first", targets="q,v"))
    randomize(model, seed=1)
    first = logits(model, ids)
    apply_lora(model, LoRAConfig(name="second", r=2, targets="all-linear"))
    assert adapter_names(model) == ["first", "second"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".second" in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".second" in n:
                p.normal_(0, 0.2)
    second = logits(model, ids)
    assert (second - first).abs().max() > 1e-3
    set_active_adapter(model, "first")
    assert torch.equal(logits(model, ids), first)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n in dict(model.named_parameters()) if ".first." in n
    }
    set_active_adapter(model, None)
    assert torch.equal(logits(model, ids), base)
    with pytest.raises(
        ValueError, match=r"no adapter named 'third'; the model has \['first', 'second'\]"
    ):
        set_active_adapter(model, "third")
    with pytest.raises(ValueError, match="already has an adapter named 'first'"):
        apply_lora(model, LoRAConfig(name="first"))
    sd = adapter_state_dict(model, "second")
    assert "blocks.0.ffn.down.lora_B.weight" in sd and sd[
        "blocks.0.ffn.down.lora_B.weight"
    ].shape == (16, 2)


def test_target_specs(make_model):
    def wrapped(cfg):
        return sorted(n for n, _ in lora_layers(apply_lora(make_model(), cfg)))

    assert wrapped(LoRAConfig(targets=["q_proj", "ffn.down"])) == [
        "blocks.0.ffn.down", "blocks.0.mixer.q_proj", "blocks.1.ffn.down", "blocks.1.mixer.q_proj",
    ]  # fmt: skip
    every = wrapped(LoRAConfig(targets="all-linear"))
    assert len(every) == 2 * 7 and "lm_head" not in every
    assert wrapped(LoRAConfig(target_regex=r"blocks\.1\.mixer\.(k|o)_proj")) == [
        "blocks.1.mixer.k_proj", "blocks.1.mixer.o_proj",
    ]  # fmt: skip
    assert wrapped(LoRAConfig(targets="gate_proj,up_proj")) == [
        "blocks.0.ffn.gate", "blocks.0.ffn.up", "blocks.1.ffn.gate", "blocks.1.ffn.up",
    ]  # fmt: skip


def test_bad_targets_and_ranks_name_what_the_model_has(make_model):
    with pytest.raises(
        ValueError,
        match=r"match no module.*named \['down', 'gate', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up', 'v_proj'\]",
    ):
        apply_lora(make_model(), LoRAConfig(targets="query,value"))
    with pytest.raises(ValueError, match=r"\['nope'\] match no module"):
        apply_lora(make_model(), LoRAConfig(targets="q,nope"))
    with pytest.raises(
        ValueError,
        match=r"r=9 is larger than min\(in_features=16, out_features=8\) = 8 of layer 'blocks.0.mixer.v_proj'",
    ):
        apply_lora(make_model(), LoRAConfig(r=9))
    with pytest.raises(ValueError, match="target_regex"):
        LoRAConfig(target_regex="(")


class Int8Linear(nn.Module):
    """A linear-like base that is not an nn.Linear: int8 weights, per-row scales."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        self.register_buffer("qweight", torch.round(w / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = linear.bias

    def dequantize(self) -> torch.Tensor:
        return self.qweight.float() * self.scale

    def forward(self, x):
        return nn.functional.linear(x, self.dequantize(), self.bias)


def test_lora_on_a_linear_like_quantized_base(randomize):
    from splice.adapters import is_linear_like

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    model[0] = Int8Linear(model[0])
    assert is_linear_like(model[0]) and not is_linear_like(nn.Embedding(3, 4))
    x = torch.randn(5, 8)
    base = model(x)
    apply_lora(model, LoRAConfig(r=2, targets="0"))
    assert isinstance(model[0], LoRALinear) and torch.equal(model(x), base)
    randomize(model)
    adapted = model(x)
    with pytest.raises(TypeError, match="cannot merge into a Int8Linear in place"):
        merge_adapter(model)
    plain = merge_and_unload(model)
    assert type(plain[0]) is nn.Linear
    torch.testing.assert_close(plain(x), adapted, atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training(make_model, ids, randomize):
    model = apply_lora(make_model(), LoRAConfig(dropout=0.5))
    randomize(model)
    model.train()
    a, b = model(ids).logits, model(ids).logits
    assert not torch.equal(a, b)
    assert torch.equal(logits(model, ids), logits(model, ids))


@pytest.mark.parametrize("dora", [False, True])
def test_half_precision_base_gets_float32_adapters(make_model, ids, randomize, dora):
    model = make_model().to(torch.bfloat16)
    apply_lora(model, LoRAConfig(r=2, targets="q,v" if dora else "embed,q,v", dora=dora))
    randomize(model)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    model.train()
    out = model(ids).logits
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(ids).logits.dtype == torch.bfloat16
