"""A resume is refused before anything of the run folder is written: a changed config
(unless ``--allow-config-change`` names every changed field), a checkpoint the changed
model cannot load, or no intact checkpoint; ``--resume auto`` never starts over on top of an
earlier run's records; resuming a finished run appends nothing."""

from __future__ import annotations

import json

import pytest
from splice.cli import main


def snapshot(run):
    """Every file of a run folder (but its lock) with its bytes."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != "splice.lock"
    }


@pytest.fixture
def finished(tiny_recipe, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", str(tiny_recipe), "--output-dir", str(run)]) == 0
    capsys.readouterr()
    return run


def resume(tiny_recipe, run, *extra):
    return main(["run", str(tiny_recipe), "--output-dir", str(run), "--resume", *extra])


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("model.n_layers=2", "model.n_layers (1 -> 2)"),
        ("train.optimizer.lr=0.01", "train.optimizer.lr (0.001 -> 0.01)"),
        ("seed=3", "seed (0 -> 3)"),
        ('data.task={"type": "arithmetic", "max_digits": 1, "op": "-"}', "data.task.op"),
    ],
)
def test_a_changed_config_is_refused_and_nothing_written(
    tiny_recipe, finished, capsys, override, shown
):
    # The reported bugs: a refused resume rewrote config.json (then eval --run failed), and
    # a changed lr, seed or task ran anyway after a warning naming top-level keys only.
    before = snapshot(finished)
    assert resume(tiny_recipe, finished, "--set", override) == 1
    err = capsys.readouterr().err
    assert shown in err and "--allow-config-change" in err, err
    assert snapshot(finished) == before


def test_allow_config_change_names_the_fields(tiny_recipe, finished, capsys):
    lr = "train.optimizer.lr=0.01"
    decay = "train.optimizer.weight_decay=0.5"
    # Naming one of two changed fields is not enough.
    assert resume(tiny_recipe, finished, "--set", lr, "--set", decay, "--set", "train.steps=6",
                  "--allow-config-change", "train.optimizer.weight_decay") == 1  # fmt: skip
    assert "train.optimizer.lr" in capsys.readouterr().err
    assert resume(tiny_recipe, finished, "--set", lr, "--set", decay, "--set", "train.steps=6",
                  "--allow-config-change", "train.optimizer.lr,train.optimizer.weight_decay") == 0  # fmt: skip
    saved = json.loads((finished / "config.json").read_text())
    assert saved["train"]["optimizer"]["lr"] == 0.01 and saved["train"]["steps"] == 6
    assert saved["train"]["optimizer"]["weight_decay"] == 0.5
    assert (finished / "checkpoints" / "step-000006").is_dir()


def test_an_allowed_model_change_the_checkpoint_cannot_hold_writes_nothing(
    tiny_recipe, finished, capsys
):
    before = snapshot(finished)
    code = resume(tiny_recipe, finished, "--set", "model.n_layers=2",
                  "--allow-config-change", "model.n_layers")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "step-000004" in err and "blocks.1" in err, err
    assert snapshot(finished) == before


def test_resume_auto_never_discards_an_earlier_runs_records(tiny_recipe, finished, capsys):
    # The reported bug: with every checkpoint damaged, --resume failed and suggested
    # --resume auto, which then started fresh and replaced the old run's metrics.jsonl.
    for ckpt in (finished / "checkpoints").iterdir():
        (ckpt / "trainer_state.json").write_text("{}")
    assert resume(tiny_recipe, finished) == 1
    assert "no intact checkpoint" in capsys.readouterr().err
    metrics = (finished / "metrics.jsonl").read_bytes()
    assert resume(tiny_recipe, finished, "auto") == 1
    err = capsys.readouterr().err
    assert "will not start over" in err and "--overwrite" in err, err
    assert (finished / "metrics.jsonl").read_bytes() == metrics
    assert resume(tiny_recipe, finished) == 1
    assert "--resume auto" not in capsys.readouterr().err  # it would not help


def test_resuming_a_finished_run_appends_no_record(tiny_recipe, finished):
    before = (finished / "metrics.jsonl").read_text()
    assert resume(tiny_recipe, finished) == 0
    assert (finished / "metrics.jsonl").read_text() == before
