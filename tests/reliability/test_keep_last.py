"""``keep_last`` means what it says: set-aside folders (``.corrupt``, ``.nonfinite``) are
pruned with the checkpoints they are older than, so they cannot fill a disk sized for
``keep_last`` checkpoints."""

from __future__ import annotations

from splice.checkpoint import CheckpointManager
from torch import nn


def test_set_aside_folders_older_than_the_kept_checkpoints_are_pruned(tmp_path):
    model = nn.Linear(4, 1)
    unpruned = CheckpointManager(tmp_path, run_id="run")
    for step in (2, 4):
        unpruned.save(step, model=model, optimizer=None, state={})
    mgr = CheckpointManager(tmp_path, keep_last=1, run_id="run")
    mgr.set_aside(tmp_path / "step-000004", "nonfinite")
    mgr.set_aside(tmp_path / "step-000002", "corrupt")
    other = CheckpointManager(tmp_path, keep_last=1, run_id="another-run")
    other.set_aside(other.save(1, model=model, optimizer=None, state={}), "corrupt")
    mgr.save(3, model=model, optimizer=None, state={})
    # 4.nonfinite is newer than the kept step 3 (kept to inspect); 2.corrupt is not.
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-000001.corrupt", "step-000003", "step-000004.nonfinite"]
    mgr.save(5, model=model, optimizer=None, state={})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-000001.corrupt", "step-000005"]  # another run's is never ours


def test_keep_last_one_keeps_one_checkpoint_after_the_run(tmp_path, make_trainer):
    # The reported bug: the newest good checkpoint is protected while training, so every
    # run ended with two checkpoints (a full disk at the third save on a volume sized for two).
    out = make_trainer(tmp_path, steps=6, keep_last=1, checkpoint_every=2).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000006"]
    assert out["checkpoint"] == str(tmp_path / "checkpoints" / "step-000006")
