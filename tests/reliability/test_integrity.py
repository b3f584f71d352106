"""Checkpoint integrity: every file's digest in a manifest written last, verified on load;
damage reported by path; resume falls back to the newest intact checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from splice.checkpoint import CheckpointManager, CorruptCheckpointError, load_model_weights
from splice.checkpoint.integrity import MANIFEST, read_manifest, verify_checkpoint
from torch import nn


def flip_byte(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_manifest_lists_every_file_with_its_size(tmp_path, make_trainer):
    make_trainer(tmp_path).fit()
    ckpt = tmp_path / "checkpoints" / "step-000004"
    manifest = read_manifest(ckpt)
    files = {p.name for p in ckpt.iterdir()} - {MANIFEST}
    assert set(manifest["files"]) == files and "model.safetensors" in files
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (ckpt / name).stat().st_size
    assert manifest["step"] == 4 and manifest["algorithm"] == "xxh3_128"
    assert verify_checkpoint(ckpt) == manifest


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("model.safetensors", "flip", "model.safetensors does not match its digest"),
        ("model.safetensors", "truncate", "model.safetensors is truncated"),
        ("trainer_state.json", "truncate", "trainer_state.json is truncated"),
        ("optimizer.safetensors", "delete", "optimizer.safetensors is missing"),
        (MANIFEST, "delete", f"no {MANIFEST}"),
    ],
)
def test_damage_is_reported_by_path_and_file(tmp_path, make_trainer, name, damage, problem):
    make_trainer(tmp_path).fit()
    ckpt = tmp_path / "checkpoints" / "step-000004"
    target = ckpt / name
    if damage == "flip":
        flip_byte(target)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.unlink()
    with pytest.raises(CorruptCheckpointError) as err:
        CheckpointManager(ckpt.parent).load(ckpt, model=nn.Linear(4, 1))
    assert str(ckpt) in str(err.value) and problem in str(err.value)


def test_a_corrupt_byte_is_detected_and_resume_uses_the_older_checkpoint(
    tmp_path, make_trainer, capsys
):
    straight = make_trainer(tmp_path / "straight", steps=6, keep_last=3)
    straight.fit()
    run = tmp_path / "run"
    make_trainer(run, steps=6, keep_last=3).fit()
    newest = run / "checkpoints" / "step-000006"
    flip_byte(newest / "model.safetensors")  # silently wrong weights, same size

    resumed = make_trainer(run, steps=6, keep_last=3)
    out = resumed.fit(resume=True)
    err = capsys.readouterr().err
    assert f"corrupt checkpoint {newest}: model.safetensors does not match" in err
    assert "step-000006.corrupt" in err  # set aside, not deleted: it can be inspected
    assert out["resumed"] and (run / "checkpoints" / "step-000006.corrupt").is_dir()
    # It resumed from step 4 and re-did steps 5-6: bitwise the uninterrupted run's weights.
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    rewritten = load_file(newest / "model.safetensors")
    assert torch.equal(rewritten["weight"], straight.model.weight)
    verify_checkpoint(newest)


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(tmp_path, make_trainer):
    make_trainer(tmp_path).fit()
    for ckpt in (tmp_path / "checkpoints").iterdir():
        flip_byte(ckpt / "trainer_state.json", offset=3)
    with pytest.raises(CorruptCheckpointError, match="no intact checkpoint"):
        make_trainer(tmp_path, steps=6).fit(resume=True)


def test_load_model_weights_verifies_and_falls_back_in_a_run_folder(tmp_path, make_trainer, capsys):
    make_trainer(tmp_path).fit()
    ckpts = tmp_path / "checkpoints"
    flip_byte(ckpts / "step-000004" / "model.safetensors")
    with pytest.raises(CorruptCheckpointError, match=r"step-000004: model\.safetensors does not"):
        load_model_weights(nn.Linear(4, 1), ckpts / "step-000004")
    with pytest.raises(CorruptCheckpointError, match=r"step-000004: model\.safetensors does not"):
        load_model_weights(nn.Linear(4, 1), ckpts / "step-000004" / "model.safetensors")
    model = nn.Linear(4, 1)
    load_model_weights(model, tmp_path)  # a run folder: the newest intact checkpoint
    assert "skipped, trying an older checkpoint" in capsys.readouterr().err
    older = load_file(ckpts / "step-000002" / "model.safetensors")
    assert torch.equal(model.weight, older["weight"])
    assert (ckpts / "step-000004").is_dir()  # reading never moves anything


def test_a_truncated_file_outside_a_checkpoint_names_the_file(tmp_path):
    from splice.checkpoint import save_model_weights

    path = tmp_path / "w.safetensors"
    save_model_weights(nn.Linear(4, 1), path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptCheckpointError, match=r"w\.safetensors cannot be read"):
        load_model_weights(nn.Linear(4, 1), path)


def test_keep_last_prunes_only_this_runs_checkpoints(tmp_path):
    model = nn.Linear(4, 1)
    other = CheckpointManager(tmp_path, keep_last=5, run_id="old-run")
    for step in (100, 200, 300):
        other.save(step, model=model, optimizer=None, state={})
    mine = CheckpointManager(tmp_path, keep_last=1, run_id="new-run")
    for step in (25, 50):
        mine.save(step, model=model, optimizer=None, state={})
    names = [p.name for p in mine.checkpoints()]
    # The old run's higher-numbered steps did not push this run's newest one out.
    assert names == ["step-000050", "step-000100", "step-000200", "step-000300"]
    state = json.loads((tmp_path / "step-000050" / "trainer_state.json").read_text())
    assert state["run_id"] == "new-run"


def test_a_safetensors_header_whose_length_starts_with_0x80_is_not_a_pickle(tmp_path):
    """A 0x280-byte header starts 80 02, like a pickle: the file is read as what it is."""
    from safetensors.torch import save_file
    from splice.checkpoint.integrity import format_problem

    for n in range(1, 400):  # find a tensor name length that gives a header length 0x..80
        path = tmp_path / "t.safetensors"
        save_file({"w" * n: torch.zeros(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length ending in 0x80 found")
    assert format_problem(path) is None
    path.write_bytes(b"\x80\x04" + b"\x00" * 30)  # a real pickle's start stays refused
    assert "pickle" in format_problem(path)
