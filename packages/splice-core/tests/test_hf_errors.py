"""Broken checkpoints fail with one clear message naming the file, tensor, field or type,
before any tensor data is read and before a model is returned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

import splice.hf.loading as loading  # noqa: E402
from splice.hf import CheckpointError, load_pretrained  # noqa: E402

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


@pytest.fixture(autouse=True)
def _no_data_read(monkeypatch):
    """Every error below is detectable from config.json and the safetensors headers alone."""

    def fail(*args, **kwargs):
        raise AssertionError("tensor data was read before the checkpoint was validated")

    monkeypatch.setattr(loading, "read_tensors", fail)


def _save(tmp_path: Path, **save_kwargs) -> Path:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    path = tmp_path / "ckpt"
    transformers.LlamaForCausalLM(cfg).save_pretrained(path, **save_kwargs)
    return path


def _edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_missing_shard_names_the_file(tmp_path):
    path = _save(tmp_path, max_shard_size="20KB")
    shards = sorted(path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1
    shards[-1].unlink()
    with pytest.raises(
        CheckpointError,
        match=rf"{shards[-1].name}: shard listed in model.safetensors.index.json is missing",
    ):
        load_pretrained(path)


def test_wrong_shape_names_tensor_file_and_shapes(tmp_path):
    path = _save(tmp_path)
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(8, 32)  # expected (16, 32)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    msg = str(err.value)
    assert "model.safetensors" in msg and "'model.layers.1.self_attn.k_proj.weight'" in msg
    assert "shape [8, 32], expected [16, 32]" in msg


def test_unsupported_model_type_names_it(tmp_path):
    path = _save(tmp_path)
    _edit_config(path, model_type="mamba")
    with pytest.raises(
        CheckpointError,
        # built-ins, plus any a plugin registers (splice-moe adds 'mixtral', 'deepseek_v3', ...)
        match=r"unsupported model_type 'mamba'; supported: \[.*'gpt2', 'llama', .*'qwen2'",
    ):
        load_pretrained(path)


def test_truncated_safetensors_names_the_file(tmp_path):
    path = _save(tmp_path)
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 100])
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: truncated safetensors file: tensor '.+' ends at",
    ):
        load_pretrained(path)


def test_truncated_header_names_the_file(tmp_path):
    path = _save(tmp_path)
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[:50])
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: truncated safetensors file \(header says"
    ):
        load_pretrained(path)


def test_missing_tensor_names_it(tmp_path):
    path = _save(tmp_path)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"missing tensor\(s\) 'model.layers.0.mlp.up_proj.weight' for llama"
    ):
        load_pretrained(path)


def test_unexpected_tensor_names_it(tmp_path):
    path = _save(tmp_path)
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"unexpected tensor\(s\) 'model.layers.0.self_attn.q_norm.weight'"
    ):
        load_pretrained(path)


def test_tensor_in_index_but_not_in_shard(tmp_path):
    path = _save(tmp_path, max_shard_size="20KB")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = sorted(set(index["weight_map"].values()))[0]
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'model.norm.weight' is listed in model.safetensors.index.json but not in the shard",
    ):
        load_pretrained(path)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
            "rope_parameters.rope_type",
        ),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_unsupported_config_field_is_named(tmp_path, changes, field):
    path = _save(tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(CheckpointError, match=rf"config.json: {field}=.* is not supported"):
        load_pretrained(path)


def test_qwen2_sliding_window_is_rejected(tmp_path):
    path = _save(tmp_path)
    _edit_config(path, model_type="qwen2", use_sliding_window=True)
    with pytest.raises(CheckpointError, match=r"use_sliding_window=True is not supported"):
        load_pretrained(path)


def test_missing_config_and_missing_weights(tmp_path):
    path = _save(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"no model.safetensors or model.safetensors.index.json found"
    ):
        load_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json: not found"):
        load_pretrained(path)
