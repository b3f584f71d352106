"""4-bit weights decode right for every shape: forward, ``dequantize()`` and the merged export
equal a plain per-block torch decode of the stored codes and scales, including rows that are
not whole blocks (where bitsandbytes' CPU kernel is wrong: a 200x96 weight at blocksize 64)."""

from __future__ import annotations

import pytest
import torch
from splice.quantization import dequantize_model
from splice_qlora.decode import cpu_kernel_wrong
from splice_qlora.export import merge_dequantized
from splice_qlora.linear4bit import Linear4bit
from torch import nn

pytest.importorskip("bitsandbytes")

SHAPES = [(200, 96), (96, 200), (33, 66), (17, 64), (5, 9)]  # (out, in)


def reference_decode(layer: Linear4bit) -> torch.Tensor:
    """Block by block, in plain Python over the blocks: the layout bitsandbytes documents."""
    codes = []
    for byte in layer.weight.flatten().tolist():
        codes += [byte >> 4, byte & 15]
    n = layer.out_features * layer.in_features
    scales = layer.absmax.float()
    if layer.nested:  # uint8 codes of the block scales, rescaled per 256 blocks, + offset
        scales = torch.stack(
            [
                layer.nested_code[int(c)] * layer.nested_absmax[j // 256]
                for j, c in enumerate(layer.absmax.tolist())
            ]
        ) + float(layer.offset)
    out = torch.empty(n)
    for block in range(0, n, layer.blocksize):
        end = min(block + layer.blocksize, n)
        idx = torch.tensor(codes[block:end])
        out[block:end] = layer.code[idx] * scales[block // layer.blocksize]
    return out.view(layer.out_features, layer.in_features)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128, 256])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_decode_equals_a_plain_torch_decode(shape, blocksize, quant_type, double_quant):
    torch.manual_seed(0)
    linear = _normal_linear(shape[1], shape[0])
    layer = Linear4bit.from_linear(
        linear, quant_type=quant_type, blocksize=blocksize, double_quant=double_quant
    )
    want = reference_decode(layer)
    torch.testing.assert_close(layer.dequantize(), want, rtol=1e-6, atol=1e-7)
    # The decoded weight is a 4-bit approximation of the original, whatever the shape.
    w = linear.weight.detach()
    err = ((want - w).abs().mean() / w.abs().mean()).item()
    assert err < (0.12 if quant_type == "nf4" else 0.16)
    # forward and its input gradient multiply by that weight
    x = torch.randn(3, 4, shape[1], requires_grad=True)  # (B, T, in)
    y = layer(x)
    torch.testing.assert_close(y, nn.functional.linear(x, want, linear.bias), rtol=1e-5, atol=1e-5)
    g = torch.randn(y.shape)
    (gx,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(gx, g @ want, rtol=1e-5, atol=1e-5)
    # the merged export holds it too
    merged = merge_dequantized(nn.Sequential(layer))
    torch.testing.assert_close(merged[0].weight.detach(), want, rtol=1e-6, atol=1e-7)


def test_the_reference_is_bitsandbytes_decode_where_its_cpu_kernel_is_right():
    import bitsandbytes.functional as F

    torch.manual_seed(0)
    for out_f, in_f, bs in [(32, 128, 64), (8, 256, 256), (5, 9, 64)]:
        assert not cpu_kernel_wrong(torch.device("cpu"), in_f, bs) or in_f % 2
        layer = Linear4bit.from_linear(nn.Linear(in_f, out_f), blocksize=bs)
        bnb_decode = F.dequantize_4bit(layer.weight, layer.quant_state())
        torch.testing.assert_close(reference_decode(layer), bnb_decode, rtol=1e-6, atol=1e-7)


def test_the_failing_shape_decodes_with_4_bit_error():
    """A 200x96 normal weight at blocksize 64 (bitsandbytes 0.50's CPU kernel: error 0.19)."""
    torch.manual_seed(0)
    linear = _normal_linear(96, 200)
    layer = Linear4bit.from_linear(linear, blocksize=64)
    w = linear.weight.detach()
    for got in (layer.dequantize(), dequantize_model(nn.Sequential(layer))[0].weight.detach()):
        assert ((got - w).abs().mean() / w.abs().mean()).item() < 0.1


def _normal_linear(in_features: int, out_features: int) -> nn.Linear:
    """Normal(0, 1) weights: block scales differ, so a block decoded with its neighbour's shows."""
    linear = nn.Linear(in_features, out_features)
    with torch.no_grad():
        linear.weight.normal_()
    return linear
