"""The fused LoRA linear (one autograd node for base + delta): same values and gradients as
the unfused autograd path, taken only where it applies, and no gradient work it does not need."""

from __future__ import annotations

import pytest
import torch
from splice_lora import LoRAConfig, LoRALinear, apply_lora
from splice_lora.fused import LoRALinearFunction, fusable
from splice_lora.layers import AdapterSpec
from torch import nn


def _layer(bias: bool, dtype: torch.dtype = torch.float64, seed: int = 0) -> LoRALinear:
    torch.manual_seed(seed)
    base = nn.Linear(12, 10, bias=bias).to(dtype).requires_grad_(False)
    layer = LoRALinear(base)
    layer.add_adapter("default", AdapterSpec(r=4, scaling=1.5))
    layer.active_adapter = "default"
    with torch.no_grad():  # a non-zero B, so every gradient term is exercised
        layer.lora_B["default"].weight.normal_()
    return layer


def _unfused(layer: LoRALinear, x: torch.Tensor) -> torch.Tensor:
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return layer.base_layer(x) + 1.5 * (x @ a.t()) @ b.t()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 12)])
def test_fused_matches_autograd_values_and_gradients(bias, shape):
    layer = _layer(bias)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "LoRALinearFunctionBackward"  # the fused path ran
    g = torch.randn_like(y)
    params = [layer.lora_A["default"].weight, layer.lora_B["default"].weight]
    got = torch.autograd.grad(y, [x, *params], g)
    ref = _unfused(layer, x)
    want = torch.autograd.grad(ref, [x, *params], g)
    torch.testing.assert_close(y, ref)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_passes_gradcheck():
    layer = _layer(bias=True)
    a = layer.lora_A["default"].weight.detach().requires_grad_()
    b = layer.lora_B["default"].weight.detach().requires_grad_()
    x = torch.randn(3, 4, 12, dtype=torch.float64, requires_grad=True)
    base = layer.base_layer

    def f(x, a, b):
        return LoRALinearFunction.apply(x, a, b, base.weight, base.bias, 1.5, None)

    assert torch.autograd.gradcheck(f, (x, a, b))


def test_no_input_gradient_when_nothing_upstream_needs_it():
    layer = _layer(bias=False)
    x = torch.randn(6, 12, dtype=torch.float64)  # e.g. the output of a frozen embedding
    seen = []
    real_mm = torch.mm

    def spy(m1, m2):
        seen.append((tuple(m1.shape), tuple(m2.shape)))
        return real_mm(m1, m2)

    y = layer(x)
    torch.mm = spy  # type: ignore[assignment]
    try:
        y.square().sum().backward()
    finally:
        torch.mm = real_mm  # type: ignore[assignment]
    # gB, grad_A, grad_B: no (N, out) @ (out, in) product for grad_x, no base weight gradient
    assert sorted(seen) == sorted([((6, 10), (10, 4)), ((4, 6), (6, 12)), ((10, 6), (6, 4))])
    assert layer.base_layer.weight.grad is None
    assert layer.lora_A["default"].weight.grad is not None


def test_fused_path_only_where_it_applies():
    layer = _layer(bias=True, dtype=torch.float32)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(3, 12)
    assert fusable(layer.base_layer, x, a, b) is not None
    # a trainable base weight needs its gradient: the autograd path computes it
    layer.base_layer.weight.requires_grad_(True)
    assert fusable(layer.base_layer, x, a, b) is None
    layer.base_layer.weight.requires_grad_(False)
    # a hook on the base must run: the base is called as a module
    handle = layer.base_layer.register_forward_hook(lambda m, i, o: o * 2)
    assert fusable(layer.base_layer, x, a, b) is None
    torch.testing.assert_close(layer(x), _unfused(layer, x))  # the hooked (doubled) base
    handle.remove()
    # a dtype mismatch (half base under float32 adapters) and autocast take the unfused path
    assert fusable(layer.base_layer, x.double(), a, b) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fusable(layer.base_layer, x, a, b) is None


def test_dropout_and_dora_keep_the_unfused_path(make_model, ids):
    for cfg in (LoRAConfig(dropout=0.1), LoRAConfig(dora=True)):
        model = make_model()
        apply_lora(model, cfg)
        model.train()
        layer = next(m for m in model.modules() if isinstance(m, LoRALinear))
        x = torch.randn(2, 3, layer.in_features)
        assert type(layer(x).grad_fn).__name__ != "LoRALinearFunctionBackward"


def test_model_training_step_fused_equals_unfused(make_model, ids):
    """One backward through a whole LoRA model: fused and unfused adapter gradients agree."""
    grads = []
    for fused in (True, False):
        model = make_model()
        apply_lora(model, LoRAConfig(r=4, targets="all-linear"))
        torch.manual_seed(1)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                nn.init.normal_(p)
        model.train()
        if not fused:  # a forward hook on every base disables fusion, changing nothing else
            for m in model.modules():
                if isinstance(m, LoRALinear):
                    m.base_layer.register_forward_hook(lambda mod, i, o: o)
        model(ids).logits.square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)
