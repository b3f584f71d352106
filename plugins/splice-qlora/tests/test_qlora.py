"""QLoRA: LoRA on a 4-bit base. Forward parity with LoRA on the dequantized weights,
gradients only in the adapter, training, save/load, merged float export."""

from __future__ import annotations

import copy

import pytest
import torch
from splice.checkpoint import load_model_weights, save_model_weights
from splice.quantization import dequantize_model, quantization_report
from splice.registry import get_registry
from splice_lora.layers import LoRALinear
from splice_qlora.configs import NF4Config, QLoRAConfig
from splice_qlora.export import merge_dequantized
from splice_qlora.io import load_quantized, save_quantized
from splice_qlora.linear4bit import Linear4bit
from splice_qlora.qlora import apply_qlora
from splice_qlora.quantizers import quantize
from torch import nn
from torch.nn import functional as F

CONFIG = QLoRAConfig(r=4, alpha=8, dropout=0.0, quantization=NF4Config(compute_dtype="float32"))


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


def _randomize_adapter(model: nn.Module, seed: int = 3) -> None:
    """B starts at zero (the adapter is a no-op); give it weights so the delta matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = _logits(model, ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def test_qlora_wraps_4bit_bases_with_lora(make_model):
    model = apply_qlora(make_model(), CONFIG)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 12  # all-linear: q, k, v, o, up, down in 2 blocks; lm_head excluded
    assert all(isinstance(m.base_layer, Linear4bit) for m in layers)
    assert type(model.lm_head) is nn.Linear
    # 4 bits + scales + each layer's saved code tables (~1.3 KB on 64-wide layers)
    assert 0.5 < quantization_report(model).bytes_per_param < 0.7


def test_qlora_forward_equals_lora_on_the_dequantized_weights(make_model):
    model = apply_qlora(make_model(), CONFIG)
    _randomize_adapter(model)
    reference = dequantize_model(copy.deepcopy(model))  # same LoRA, float bases = dequant(W)
    assert not any(isinstance(m, Linear4bit) for m in reference.modules())
    assert any(isinstance(m, LoRALinear) for m in reference.modules())
    for n, p in reference.named_parameters():  # dequantized layers come back trainable
        p.requires_grad_("lora_" in n)
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    out, ref = _logits(model, ids), _logits(reference, ids)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # The gradients agree too (the 4-bit backward dequantizes again for the input gradient).
    _loss(model, ids).backward()
    _loss(reference, ids).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-5, rtol=1e-4)


def test_gradients_reach_only_the_adapter_and_training_lowers_the_loss(make_model):
    model = apply_qlora(make_model(), CONFIG)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    ids = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(8):
        opt.zero_grad()
        loss = _loss(model, ids)
        loss.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert with_grad == trainable
        opt.step()
        first = first if first is not None else loss.item()
    assert _loss(model, ids).item() < first * 0.9
    after = model.state_dict()
    for k, v in frozen_before.items():  # packed codes, scales, embeddings, norms: untouched
        assert torch.equal(after[k], v), k


def test_registered_adapter_and_experiment_config(make_model):
    adapter = get_registry().build("adapter", QLoRAConfig(r=2, targets=["q_proj", "v_proj"]), None)
    model = adapter.apply(make_model())
    assert len(quantization_report(model).layers) == 12  # the base is all quantized ...
    lora = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert lora == [f"blocks.{i}.mixer.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    with pytest.raises(ValueError, match="the model's linear"):
        get_registry().build("adapter", QLoRAConfig(targets=["nope"]), None).apply(make_model())


def test_qlora_model_saves_and_loads_with_its_quant_state(make_model, tmp_path):
    model = apply_qlora(make_model(), CONFIG)
    _randomize_adapter(model)
    ids = torch.randint(0, 40, (2, 12))
    expected = _logits(model, ids)
    save_model_weights(model, tmp_path / "model.safetensors")
    fresh = apply_qlora(make_model(seed=7), CONFIG)  # other weights everywhere
    load_model_weights(fresh, tmp_path / "model.safetensors")
    torch.testing.assert_close(_logits(fresh, ids), expected, atol=0, rtol=0)


def test_save_quantized_and_load_into_a_float_model(make_model, tmp_path):
    model = make_model()
    config = NF4Config(compute_dtype="float32", targets=["q_proj", "up"])
    quantize(model, config)
    ids = torch.randint(0, 40, (2, 12))
    save_quantized(model, tmp_path / "q", config)
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "model.safetensors",
        "quantization.json",
    ]
    fresh = load_quantized(make_model(seed=9), tmp_path / "q")
    torch.testing.assert_close(_logits(fresh, ids), _logits(model, ids), atol=0, rtol=0)
    assert quantization_report(fresh) == quantization_report(model)
    with pytest.raises(
        ValueError, match=r"layer 'blocks.0.mixer.q_proj' is \(64, 64\) in the file"
    ):
        load_quantized(make_model(d_model=32), tmp_path / "q")


def test_merge_dequantized_matches_the_qlora_forward(make_model):
    model = apply_qlora(make_model(), CONFIG)
    _randomize_adapter(model)
    ids = torch.randint(0, 40, (2, 12))
    expected = _logits(model, ids)
    merge_dequantized(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("_proj"))
    assert quantization_report(model).layers == ()
    torch.testing.assert_close(_logits(model, ids), expected, atol=1e-5, rtol=1e-5)


def test_fused_lora_over_4bit_matches_the_bitsandbytes_path(make_model):
    """splice-lora's fused node (dequantize in forward, again in backward) equals LoRA over
    bitsandbytes' own ``matmul_4bit`` in values and adapter gradients."""
    model = apply_qlora(make_model(), CONFIG)
    _randomize_adapter(model)
    unfused = copy.deepcopy(model)
    for m in unfused.modules():  # a forward hook on the base disables fusion, nothing else
        if isinstance(m, Linear4bit):
            m.register_forward_hook(lambda mod, i, o: o)
    layer = next(m for m in model.modules() if isinstance(m, LoRALinear))
    x = torch.randn(2, 3, layer.in_features)
    assert type(layer(x).grad_fn).__name__ == "LoRALinearFunctionBackward"
    assert layer.base_layer.dense_matmul_weight(torch.float64) is None  # would cast: unfused
    ids = torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(model, ids), _logits(unfused, ids), atol=1e-5, rtol=1e-5)
    _loss(model, ids).backward()
    _loss(unfused, ids).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    ref = {n: p.grad for n, p in unfused.named_parameters() if p.grad is not None}
    assert grads.keys() == ref.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads[n], ref[n], atol=1e-5, rtol=1e-4)
