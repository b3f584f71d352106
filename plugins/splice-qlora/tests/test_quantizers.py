"""NF4 / FP4 / LLM.int8 quantizers: storage, rounding error, forward, state dict, errors."""

from __future__ import annotations

import sys

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from splice.checkpoint import load_model_weights, save_model_weights
from splice.config import QuantizerField
from splice.quantization import (
    dequantize_model,
    quantization_report,
    select_modules,
)
from splice.registry import get_registry
from splice_qlora.configs import FP4Config, Int8Config, NF4Config
from splice_qlora.dtype import resolve_compute_dtype
from splice_qlora.linear4bit import Linear4bit
from splice_qlora.linear8bit import Linear8bit
from splice_qlora.quantizers import quantize, quantizer_for
from torch import nn

# The 16 NF4 levels from the QLoRA paper (Dettmers et al. 2023, appendix E), typed here
# rather than read from bitsandbytes so the test checks the library against the paper.
NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])  # fmt: skip


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


def _linear(out_f: int = 256, in_f: int = 512, *, bias: bool = False, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    nn.init.normal_(lin.weight, std=0.02)
    return lin


def test_registered_through_the_registry():
    reg = get_registry()
    field = TypeAdapter(QuantizerField)
    q = reg.build("quantizer", field.validate_python({"type": "nf4", "blocksize": 128}), None)
    layer = q.quantize(_linear())
    assert isinstance(layer, Linear4bit) and layer.blocksize == 128 and layer.quant_type == "nf4"
    int8 = reg.build("quantizer", field.validate_python("int8"), None)
    assert isinstance(int8.quantize(_linear()), Linear8bit)


def _saved_bytes_per_weight(model: nn.Module, layers: tuple[str, ...], path) -> float:
    """Bytes a safetensors file holds for the quantized layers' weights, per weight."""
    from safetensors.torch import load_file

    save_model_weights(model, path)  # splice's own save: the model's whole state dict
    saved = load_file(path)
    nbytes = sum(
        t.numel() * t.element_size()
        for k, t in saved.items()
        if any(k.startswith(f"{name}.weight") for name in layers)
    )
    weights = sum(
        model.get_submodule(n).in_features * model.get_submodule(n).out_features for n in layers
    )
    return nbytes / weights


@pytest.mark.parametrize("d_model", [64, 128])
@pytest.mark.parametrize("double_quant", [True, False])
def test_bytes_per_param_is_what_a_saved_model_holds(make_model, tmp_path, d_model, double_quant):
    """Every tensor saved for a quantized weight counts: packed codes, block scales, nested
    scales, both code tables (in every layer, as the state dict holds them) and the JSON."""
    model = make_model(d_model=d_model)
    report = quantize(model, NF4Config(blocksize=64, double_quant=double_quant))
    assert len(report.layers) == 12 and "lm_head" not in report.layers  # 2 blocks x (4 + 2)
    assert report.params == 2 * (4 * d_model**2 + 2 * d_model * 4 * d_model)
    saved = _saved_bytes_per_weight(model, report.layers, tmp_path / "q.safetensors")
    assert report.bytes_per_param == pytest.approx(saved, rel=1e-12)
    assert report.float_nbytes == 4 * report.params
    # 4 bits + the block scales (8 bits / 64 double quantized, else 32 / 64) + per-layer
    # tables (16 + 256 fp32 with double quantization, 16 without) and JSON (~170 / ~80 bytes).
    tables = (16 + 256) * 4 + 170 if double_quant else 16 * 4 + 80
    scales = 1 / 64 if double_quant else 4 / 64
    per_layer = tables * len(report.layers) / report.params
    assert report.bytes_per_param == pytest.approx(0.5 + scales + per_layer, abs=2e-3)


def test_nf4_values_are_the_papers_levels_times_block_absmax():
    lin = _linear()
    layer = quantizer_for(NF4Config(double_quant=False)).quantize(lin)
    w, deq = lin.weight.detach().reshape(-1, 64), layer.dequantize().reshape(-1, 64)
    absmax = w.abs().amax(dim=1, keepdim=True)
    # Every dequantized weight is a level times its block's absmax (fp32 scales: exact) ...
    ratio = deq / absmax
    nearest = (ratio[..., None] - NF4_LEVELS).abs().min(dim=-1).values
    assert nearest.max() < 1e-6
    # ... and it is the level nearest to the original weight: the error is at most half
    # the gap between the two levels around it (the largest gap is -1 .. -0.696).
    levels = NF4_LEVELS * absmax[..., None]  # (blocks, 64, 16) broadcast below
    best = (w[..., None] - levels.squeeze(-2)[:, None, :]).abs().min(dim=-1).values
    assert torch.allclose((deq - w).abs(), best, atol=1e-6)
    max_gap = NF4_LEVELS.diff().max()
    assert ((deq - w).abs() <= absmax * max_gap / 2 + 1e-7).all()


def test_double_quant_and_fp4_errors_are_as_expected():
    lin = _linear()
    w = lin.weight.detach()

    def rel_err(config):
        deq = quantizer_for(config).quantize(lin).dequantize()
        return ((deq - w).abs().mean() / w.abs().mean()).item()

    nf4, nf4_dq, fp4 = (
        rel_err(NF4Config(double_quant=False)),
        rel_err(NF4Config()),
        rel_err(FP4Config()),
    )
    # Gaussian weights, blocks of 64: NF4's mean relative error is ~9% (measured 0.091).
    assert 0.05 < nf4 < 0.11
    # Double quantization rounds the block scales to 8 bits: barely any extra error.
    assert nf4 <= nf4_dq < nf4 * 1.05
    # NF4's levels follow the normal distribution, so on normal weights it beats FP4.
    assert nf4_dq < fp4


def test_four_bit_forward_matches_its_dequantized_linear_and_passes_input_gradients():
    lin = _linear(bias=True)
    nn.init.normal_(lin.bias)
    q = quantizer_for(NF4Config(compute_dtype="float32"))
    layer = q.quantize(lin)
    assert not any(p.requires_grad for p in layer.parameters())
    x = torch.randn(3, 5, 512, requires_grad=True)
    y = layer(x)
    ref_lin = q.dequantize(layer)
    assert isinstance(ref_lin, nn.Linear)
    x_ref = x.detach().clone().requires_grad_(True)
    ref = ref_lin(x_ref)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    assert layer.bias.grad is None


def test_bf16_compute_dtype_runs_and_stays_close():
    lin = _linear()
    x = torch.randn(4, 512)
    y32 = quantizer_for(NF4Config(compute_dtype="float32")).quantize(lin)(x)
    y16 = quantizer_for(NF4Config(compute_dtype="bfloat16")).quantize(lin)(x)
    assert y16.dtype == torch.float32  # cast back to the input's dtype
    assert ((y16 - y32).norm() / y32.norm()).item() < 1e-2


def test_auto_compute_dtype_is_bf16_only_where_native(monkeypatch):
    from splice.training import precision

    monkeypatch.delenv(precision.AUTO_PRECISION_ENV, raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_compute_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_compute_dtype("auto", "cpu") == torch.bfloat16
    wide, narrow = precision.AUTO_BF16_MIN_WIDTH, precision.AUTO_BF16_MIN_WIDTH - 1
    assert resolve_compute_dtype("auto", "cpu", wide) == torch.bfloat16
    assert resolve_compute_dtype("auto", "cpu", narrow) == torch.float32  # casts cost more
    assert resolve_compute_dtype("float16") == torch.float16
    with pytest.raises(ValueError, match="compute_dtype='int4'"):
        resolve_compute_dtype("int4")


def test_int8_rows_and_outlier_decomposition():
    lin = _linear()
    w = lin.weight.detach()
    layer = quantizer_for(Int8Config(threshold=6.0)).quantize(lin)
    x = torch.randn(8, 512)
    # In training mode bitsandbytes' CPU path multiplies by the dequantized weight.
    torch.testing.assert_close(layer(x), x @ layer.dequantize().t(), atol=1e-2, rtol=1e-2)
    layer.eval()  # LLM.int8 proper: int8 matmul + 16-bit outlier columns
    assert layer.weight.dtype == torch.int8 and layer.SCB.shape == (256,)
    # Row-wise absmax scaling: error at most half a step (absmax / 127 / 2) per row.
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((layer.dequantize() - w).abs() <= step / 2 + 1e-6).all()
    assert quantization_report(nn.Sequential(layer)).bytes_per_param == pytest.approx(1 + 4 / 512)
    # An outlier feature (one input column far larger than the rest) would stretch the
    # row-wise input scale and wipe out the other columns in int8; LLM.int8 multiplies
    # that column in 16-bit instead.
    torch.manual_seed(1)
    x = torch.randn(8, 512)
    x[:, 7] = 60.0
    exact = x @ w.t()
    mixed = layer(x)
    plain = quantizer_for(Int8Config(threshold=0.0)).quantize(lin).eval()(x)
    err = lambda y: ((y - exact).norm() / exact.norm()).item()  # noqa: E731
    assert err(mixed) < 0.02
    assert err(mixed) < err(plain) / 3


def test_quantized_model_forward_and_save_load_roundtrip(make_model, tmp_path):
    model = make_model()
    ids = torch.randint(0, 40, (2, 12))
    ref = logits(model, ids)
    report = quantize(model, NF4Config(compute_dtype="float32"))
    out = logits(model, ids)
    assert 0 < ((out - ref).norm() / ref.norm()).item() < 0.3  # quantized, and still close
    save_model_weights(model, tmp_path / "model.safetensors")

    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        packed = f.get_tensor("blocks.0.mixer.q_proj.weight")
    assert packed.dtype == torch.uint8 and packed.numel() == 64 * 64 // 2
    assert "blocks.0.mixer.q_proj.weight.quant_state.bitsandbytes__nf4" in keys
    assert "blocks.0.mixer.q_proj.weight.nested_absmax" in keys

    fresh = make_model(seed=5)  # different float weights: everything must come from the file
    q = quantizer_for(NF4Config(compute_dtype="float32"))
    for name in report.layers:
        lin = fresh.get_submodule(name)
        parent, _, attr = name.rpartition(".")
        setattr(fresh.get_submodule(parent), attr,
                q.shell(lin.in_features, lin.out_features, bias=lin.bias is not None))  # fmt: skip
    load_model_weights(fresh, tmp_path / "model.safetensors")
    torch.testing.assert_close(logits(fresh, ids), out, atol=0, rtol=0)
    assert quantization_report(fresh) == report


def test_loading_a_quantized_weight_of_the_wrong_shape_names_it(make_model, tmp_path):
    model = make_model()
    quantize(model, NF4Config())
    save_model_weights(model, tmp_path / "model.safetensors")
    other = make_model(d_model=32)
    quantize(other, NF4Config())
    with pytest.raises(
        RuntimeError, match=r"blocks.0.mixer.q_proj.weight: quantized shape \(64, 64\)"
    ):
        from safetensors.torch import load_file

        other.load_state_dict(load_file(str(tmp_path / "model.safetensors")))


def test_dequantize_model_gives_plain_linears(make_model):
    model = make_model()
    quantize(model, Int8Config())
    deq = {n: model.get_submodule(n).dequantize() for n in quantization_report(model).layers}
    dequantize_model(model)
    assert quantization_report(model).layers == ()
    for name, w in deq.items():
        lin = model.get_submodule(name)
        assert type(lin) is nn.Linear and torch.equal(lin.weight.detach(), w)


def test_targets_by_name_and_regex(make_model):
    model = make_model()
    assert select_modules(model, ["q_proj", "v_proj"]) == [
        "blocks.0.mixer.q_proj", "blocks.0.mixer.v_proj",
        "blocks.1.mixer.q_proj", "blocks.1.mixer.v_proj",
    ]  # fmt: skip
    report = quantize(model, NF4Config(targets=r"blocks\.1\..*"))
    assert report.layers == tuple(
        f"blocks.1.{m}"
        for m in (
            "mixer.q_proj",
            "mixer.k_proj",
            "mixer.v_proj",
            "mixer.o_proj",
            "ffn.up",
            "ffn.down",
        )
    )


def test_errors_name_the_problem(make_model, monkeypatch):
    model = make_model()
    with pytest.raises(ValueError, match=r"cannot quantize 'embed': it is a Embedding"):
        quantize(model, NF4Config(targets=["embed"]))
    with pytest.raises(TypeError, match="cannot quantize a Embedding"):
        quantizer_for(NF4Config()).quantize(model.embed)
    with pytest.raises(
        ValueError, match=r"matched no linear layer; the model's linear layers are \["
    ):
        quantize(model, NF4Config(targets=["nope"]))
    with pytest.raises(ValueError, match=r"'lm_head': its weight is shared with \['embed'\]"):
        quantize(model, NF4Config(targets=["lm_head"]))
    with pytest.raises(ValidationError, match=r"blocksize=100 is not supported by bitsandbytes"):
        NF4Config(blocksize=100)
    # A size that passes validation but bitsandbytes rejects still names it.
    bad = NF4Config.model_construct(blocksize=100, double_quant=True, compute_dtype="float32",
                                    targets="all-linear", exclude=["lm_head"])  # fmt: skip
    with pytest.raises(ValueError, match="cannot quantize to nf4 with blocksize=100"):
        quantizer_for(bad).quantize(_linear())
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(ImportError, match="uv add splice-qlora"):
        quantizer_for(NF4Config()).quantize(_linear())
