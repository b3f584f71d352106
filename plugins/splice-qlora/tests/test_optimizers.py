"""bitsandbytes optimizers selected by ``optimizer.name``: 8-bit AdamW on CPU, paged ones
refused off CUDA, checkpointable through safetensors + JSON."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from splice.checkpoint.state import optimizer_from_flat, optimizer_to_flat
from splice.training.configs import OptimizerConfig
from splice.training.trainer import build_optimizer
from torch import nn


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 64))


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()


def test_adamw_8bit_keeps_8bit_state_and_follows_adamw():
    x = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    m8, m32 = _model(), _model()
    cfg = dict(lr=1e-2, weight_decay=0.01)
    opt8 = build_optimizer(m8, OptimizerConfig(name="adamw_8bit", **cfg))
    opt32 = build_optimizer(m32, OptimizerConfig(name="adamw", **cfg))
    assert type(opt8).__name__ == "AdamW8bit"
    start = m8[0].weight.detach().clone()
    for _ in range(5):
        _step(m8, opt8, x)
        _step(m32, opt32, x)
    state = opt8.state[m8[0].weight]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    moved8 = m8[0].weight.detach() - start
    moved32 = m32[0].weight.detach() - start
    # Same direction and size of update as fp32 AdamW, up to the 8-bit rounding of the moments.
    cos = torch.nn.functional.cosine_similarity(moved8.flatten(), moved32.flatten(), dim=0)
    assert cos > 0.99
    assert (moved8.norm() / moved32.norm() - 1).abs() < 0.05


def test_adamw_8bit_state_checkpoints_to_safetensors_and_json(tmp_path):
    x = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    model = _model()
    opt = build_optimizer(model, OptimizerConfig(name="adamw_8bit", lr=1e-2))
    for _ in range(3):
        _step(model, opt, x)
    tensors, meta = optimizer_to_flat(opt)
    save_file(tensors, str(tmp_path / "optimizer.safetensors"))
    (tmp_path / "meta.json").write_text(json.dumps(meta))  # no tensor left in the JSON part
    twin = _model()
    twin.load_state_dict(model.state_dict())
    opt2 = build_optimizer(twin, OptimizerConfig(name="adamw_8bit", lr=1e-2))
    optimizer_from_flat(
        opt2,
        load_file(str(tmp_path / "optimizer.safetensors")),
        json.loads((tmp_path / "meta.json").read_text()),
    )
    _step(model, opt, x)
    _step(twin, opt2, x)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_paged_optimizers_need_cuda():
    with pytest.raises(
        ValueError, match=r"paged optimizers .* need CUDA, but the parameters are on \['cpu'\]"
    ):
        build_optimizer(_model(), OptimizerConfig(name="paged_adamw_8bit"))


def test_missing_bitsandbytes_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ImportError, match="uv add splice-qlora"):
        build_optimizer(_model(), OptimizerConfig(name="adamw_8bit"))
