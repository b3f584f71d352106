"""Checkpoints: safetensors + JSON round trip, atomic folders, pruning, no pickles."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from splice.checkpoint import CheckpointManager, atomic_dir, load_model_weights, save_model_weights
from splice.checkpoint.state import optimizer_from_flat, optimizer_to_flat
from torch import nn


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.LayerNorm(4)


def trained(seed=0):
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model.head(model.norm(model.embed(torch.arange(10)))).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_round_trip_restores_model_optimizer_rng_and_state(tmp_path):
    model, opt = trained()
    mgr = CheckpointManager(tmp_path)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = mgr.save(3, model=model, optimizer=opt, state={"micro_batches": 6}, config={"a": 1})
    expect = (torch.rand(3), random.random(), np.random.rand())

    fresh, fresh_opt = trained(seed=1)
    torch.manual_seed(99)
    random.seed(99)
    state = mgr.load(path, model=fresh, optimizer=fresh_opt)
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == (
        expect[0].tolist(),
        expect[1],
        expect[2],
    )
    assert state["step"] == 3 and state["micro_batches"] == 6
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.head.weight is fresh.embed.weight  # tying survives loading
    sa, sb = opt.state_dict(), fresh_opt.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            assert torch.equal(v, sb["state"][i][k])
    assert json.loads((path / "config.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "trainer_state.json",
    ]


def test_optimizer_flat_is_safetensors_and_json_only():
    _, opt = trained()
    tensors, meta = optimizer_to_flat(opt)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)  # everything else is JSON
    _, other = trained(seed=2)
    optimizer_from_flat(other, tensors, json.loads(json.dumps(meta)))
    assert other.param_groups[0]["betas"] == opt.param_groups[0]["betas"]


def test_keep_last_prunes_oldest(tmp_path):
    model, opt = trained()
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 10):
        mgr.save(step, model=model, optimizer=opt, state={})
    assert [p.name for p in mgr.checkpoints()] == ["step-000003", "step-000010"]
    assert mgr.latest().name == "step-000010"


def test_failed_write_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    model, opt = trained()
    mgr = CheckpointManager(tmp_path, keep_last=1)
    good = mgr.save(1, model=model, optimizer=opt, state={})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("splice.checkpoint.manager.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        mgr.save(2, model=model, optimizer=opt, state={})
    assert mgr.checkpoints() == [good]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]  # no temp left
    monkeypatch.undo()
    mgr.load(good, model=Tied(), optimizer=None)


def test_killed_writer_temporaries_are_ignored(tmp_path):
    model, opt = trained()
    mgr = CheckpointManager(tmp_path)
    mgr.save(4, model=model, optimizer=opt, state={})
    (tmp_path / ".tmp-step-000008-1234").mkdir()  # what a SIGKILL mid-write leaves
    (tmp_path / ".tmp-step-000008-1234" / "model.safetensors").write_bytes(b"\x00" * 7)
    assert mgr.latest().name == "step-000004"
    mgr.save(5, model=model, optimizer=opt, state={})
    assert not (tmp_path / ".tmp-step-000008-1234").exists()


def test_atomic_dir_replaces_an_existing_folder(tmp_path):
    final = tmp_path / "x"
    with atomic_dir(final) as d:
        (d / "a").write_text("1")
    with atomic_dir(final) as d:
        (d / "b").write_text("2")
    assert [p.name for p in final.iterdir()] == ["b"]


def test_load_model_weights_from_file_and_run_folder(tmp_path):
    model, _ = trained()
    save_model_weights(model, tmp_path / "w.safetensors")
    other = Tied()
    load_model_weights(other, tmp_path / "w.safetensors")
    assert torch.equal(other.embed.weight, model.embed.weight)
    CheckpointManager(tmp_path / "run" / "checkpoints").save(
        7, model=model, optimizer=None, state={}
    )
    other = Tied()
    load_model_weights(other, tmp_path / "run")
    assert torch.equal(other.norm.weight, model.norm.weight)
    with pytest.raises(ValueError, match="missing keys"):
        load_model_weights(nn.Sequential(nn.Linear(4, 4)), tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model_weights(other, tmp_path / "nope")


def test_checkpoint_code_never_unpickles():
    import inspect

    import splice.checkpoint.atomic
    import splice.checkpoint.manager
    import splice.checkpoint.state

    for mod in (splice.checkpoint.atomic, splice.checkpoint.manager, splice.checkpoint.state):
        src = inspect.getsource(mod)
        assert "torch.load" not in src and "pickle" not in src


def test_a_safetensors_header_length_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A pickle starts with byte 0x80; so does a safetensors file whose JSON header length is
    128 mod 256. The structure decides, the signature only names what a bad file is."""
    import pickle
    import struct

    from safetensors.torch import save_file
    from splice.checkpoint.integrity import format_problem

    path = tmp_path / "optimizer.safetensors"
    for n in range(1, 200):  # tensor names of growing length until the header is 128 mod 256
        save_file({"x" * n: torch.zeros(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    head = path.read_bytes()[:8]
    assert head[0] == 0x80 and struct.unpack("<Q", head)[0] % 256 == 128
    assert format_problem(path) is None
    path.write_bytes(pickle.dumps({"state": [1, 2, 3]}, protocol=4))
    assert "is a Python pickle" in format_problem(path)
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    assert "header is not JSON" in format_problem(path)
    path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    assert "header length is impossible" in format_problem(path)
