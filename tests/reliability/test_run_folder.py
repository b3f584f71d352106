"""A run folder belongs to one run: reuse refused, concurrent runs refused by an OS lock,
``--resume`` needs something to resume, leftovers of killed writers cleaned."""

from __future__ import annotations

import json
import signal

import pytest
from splice.cli import main
from splice.training.run_folder import (
    LOCK_FILE,
    NothingToResumeError,
    RunFolderLockedError,
    RunFolderNotEmptyError,
    claim_run_folder,
)


def steps_in(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_fresh_run_into_a_used_folder_is_refused_and_the_old_run_kept(tmp_path, make_trainer):
    make_trainer(tmp_path, steps=6).fit()
    assert steps_in(tmp_path) == ["step-000004", "step-000006"]
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderNotEmptyError) as err:
        make_trainer(tmp_path, steps=2).fit()
    msg = str(err.value)
    assert str(tmp_path) in msg and "step-000006" in msg
    assert "--resume" in msg and "--output-dir" in msg and "--overwrite" in msg
    # Nothing of the old run was touched: not its checkpoints, not its log.
    assert steps_in(tmp_path) == ["step-000004", "step-000006"]
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_overwrite_replaces_the_old_run_entirely(tmp_path, make_trainer):
    # The reported bug: an old longer run's step-000006 outlived the new run's checkpoints
    # (keep_last pruned by step number) and resume/eval then used the old weights.
    make_trainer(tmp_path, steps=6, keep_last=1).fit()
    out = make_trainer(tmp_path, steps=2, keep_last=1).fit(overwrite=True)
    assert steps_in(tmp_path) == ["step-000002"]
    logged = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2] and out["steps"] == 2
    with pytest.raises(ValueError, match="exclude each other"):
        make_trainer(tmp_path).fit(resume=True, overwrite=True)


def test_cli_reuse_of_the_default_folder_is_refused(tiny_recipe, tmp_path, capsys, monkeypatch):
    # The reported case: the same recipe run twice with different settings, no --output-dir.
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "tiny"
    assert main(["run", str(tiny_recipe)]) == 0
    config_before = (run / "config.json").read_text()
    capsys.readouterr()
    code = main(["run", str(tiny_recipe), "--set", "train.steps=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("splice run: error: runs/tiny already holds checkpoints")
    assert (run / "config.json").read_text() == config_before  # not clobbered by the refusal
    assert main(["run", str(tiny_recipe), "--overwrite", "--set", "train.steps=2"]) == 0
    assert steps_in(run) == ["step-000002"]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 2


def test_resume_needs_a_checkpoint_unless_auto(tiny_recipe, tmp_path, make_trainer, capsys):
    with pytest.raises(NothingToResumeError, match="nothing to resume"):
        make_trainer(tmp_path / "t").fit(resume=True)
    run = tmp_path / "run"
    assert main(["run", str(tiny_recipe), "--output-dir", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "splice run: error: nothing to resume" in err and "--resume auto" in err
    assert main(["run", str(tiny_recipe), "--output-dir", str(run), "--resume", "auto"]) == 0
    assert steps_in(run) == ["step-000002", "step-000004"]


def test_a_second_concurrent_run_is_refused_naming_the_holder(tmp_path, make_trainer, hold_folder):
    holder = hold_folder(tmp_path)
    with pytest.raises(RunFolderLockedError) as err:
        make_trainer(tmp_path).fit()
    assert f"PID {holder.pid}" in str(err.value) and str(tmp_path) in str(err.value)
    assert not (tmp_path / "checkpoints").exists()  # the refused run wrote nothing
    holder.send_signal(signal.SIGKILL)  # the OS drops a dead process's lock
    holder.wait()
    assert make_trainer(tmp_path).fit()["steps"] == 4
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no PID left behind


def test_claims_nest_within_a_process_and_release(tmp_path):
    with claim_run_folder(tmp_path), claim_run_folder(tmp_path, resume="auto"):
        pass
    with claim_run_folder(tmp_path):  # released: claimable again
        pass


def test_leftover_temporaries_are_cleaned_on_the_next_start(tmp_path, make_trainer):
    make_trainer(tmp_path).fit()
    junk = [
        tmp_path / "checkpoints" / ".tmp-step-000006-4242",
        tmp_path / "checkpoints" / ".tmp-del-step-000002",
    ]
    for j in junk:
        j.mkdir()
        (j / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".tmp-config.json-4242").write_text("{")
    make_trainer(tmp_path, steps=6).fit(resume=True)
    assert not any(j.exists() for j in junk) and not (tmp_path / ".tmp-config.json-4242").exists()
