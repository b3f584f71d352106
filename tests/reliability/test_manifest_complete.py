"""A manifest vouches for a whole checkpoint: every file must be listed, every safetensors
file must be one (a pickle in its place is named and skipped), a folder without a manifest
is loaded with a warning, and a full disk names the checkpoint it could not write."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from splice.checkpoint import CheckpointManager, CorruptCheckpointError, load_model_weights
from splice.checkpoint.integrity import MANIFEST, file_digest, verify_checkpoint
from torch import nn


def flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(ckpt, edit):
    manifest = json.loads((ckpt / MANIFEST).read_text())
    edit(manifest["files"])
    (ckpt / MANIFEST).write_text(json.dumps(manifest))


def test_an_emptied_manifest_with_flipped_weights_does_not_resume(tmp_path, make_trainer, capsys):
    # The reported bug: resume checked only the files the manifest listed, so a manifest
    # emptied of entries plus flipped weights resumed silently.
    make_trainer(tmp_path).fit()
    newest = tmp_path / "checkpoints" / "step-000004"
    flip_byte(newest / "model.safetensors")
    edit_manifest(newest, lambda files: files.clear())
    with pytest.raises(CorruptCheckpointError, match="lists no files"):
        verify_checkpoint(newest)
    out = make_trainer(tmp_path, steps=6).fit(resume=True)
    err = capsys.readouterr().err
    assert "step-000004: " in err and "step-000004.corrupt" in err
    assert out["resumed"] and (tmp_path / "checkpoints" / "step-000004.corrupt").is_dir()
    verify_checkpoint(tmp_path / "checkpoints" / "step-000004")  # redone from step 2


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path, make_trainer):
    make_trainer(tmp_path).fit()
    ckpt = tmp_path / "checkpoints" / "step-000004"
    edit_manifest(ckpt, lambda files: files.pop("model.safetensors"))
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors is not listed"):
        verify_checkpoint(ckpt)
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors is not listed"):
        load_model_weights(nn.Linear(4, 1), ckpt)


def test_a_manifest_valid_pickle_optimizer_is_named_and_resume_falls_back(
    tmp_path, make_trainer, capsys
):
    straight = make_trainer(tmp_path / "straight", steps=6)
    straight.fit()
    run = tmp_path / "run"
    make_trainer(run).fit()
    newest = run / "checkpoints" / "step-000004"
    opt = newest / "optimizer.safetensors"
    opt.write_bytes(pickle.dumps({"state": [1, 2, 3]}))  # and a manifest that agrees

    def agree(files):
        files["optimizer.safetensors"] = {"bytes": opt.stat().st_size, "digest": file_digest(opt)}

    edit_manifest(newest, agree)
    with pytest.raises(CorruptCheckpointError) as err:
        CheckpointManager(newest.parent).load(newest, model=nn.Linear(4, 1))
    assert str(newest) in str(err.value) and "optimizer.safetensors" in str(err.value)
    assert "pickle" in str(err.value)
    resumed = make_trainer(run, steps=6)
    assert resumed.fit(resume=True)["resumed"]
    assert "step-000004.corrupt" in capsys.readouterr().err
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)  # resumed from step 2: the uninterrupted run's weights


def test_loading_a_checkpoint_without_manifest_warns(tmp_path, make_trainer, capsys):
    make_trainer(tmp_path).fit()
    ckpt = tmp_path / "checkpoints" / "step-000004"
    (ckpt / MANIFEST).unlink()
    model = nn.Linear(4, 1)
    load_model_weights(model, tmp_path)  # the run folder: its newest checkpoint, unchecked
    err = capsys.readouterr().err
    assert f"warning: {ckpt} has no {MANIFEST}" in err
    assert torch.equal(model.weight, load_file(ckpt / "model.safetensors")["weight"])
    load_model_weights(nn.Linear(4, 1), ckpt)
    assert f"warning: {ckpt} has no {MANIFEST}" in capsys.readouterr().err


def test_a_full_disk_names_the_checkpoint(tmp_path, monkeypatch):
    import splice.checkpoint.manager as manager

    def full(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    monkeypatch.setattr(manager, "save_file", full)
    mgr = CheckpointManager(tmp_path / "checkpoints")
    with pytest.raises(OSError) as err:
        mgr.save(3, model=nn.Linear(4, 1), optimizer=None, state={})
    msg = str(err.value)
    assert str(tmp_path / "checkpoints" / "step-000003") in msg and "No space left" in msg
    assert "keep_last" in msg
    assert not list((tmp_path / "checkpoints").iterdir())  # no temporary left behind
