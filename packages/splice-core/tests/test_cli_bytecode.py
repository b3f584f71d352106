"""splice.cli.bytecode: compile a site-packages tree once per change, then never again."""

from __future__ import annotations

import time
from pathlib import Path

from splice.cli.bytecode import ensure_bytecode


def pycs(site: Path) -> list[Path]:
    return sorted(site.rglob("*.pyc"))


def test_compiles_once_then_again_only_after_a_change(tmp_path: Path) -> None:
    site, venv = tmp_path / "site", tmp_path / "venv"
    site.mkdir()
    venv.mkdir()
    (site / "a.py").write_text("X = 1\n")
    assert ensure_bytecode(site=site, marker_dir=venv)
    assert [p.name.split(".")[0] for p in pycs(site)] == ["a"]
    assert not ensure_bytecode(site=site, marker_dir=venv)  # nothing changed: no work
    time.sleep(0.01)
    (site / "b.py").write_text("Y = 2\n")  # a package installed: the folder changed
    assert ensure_bytecode(site=site, marker_dir=venv)
    assert [p.name.split(".")[0] for p in pycs(site)] == ["a", "b"]


def test_outside_a_forced_no_bytecode_env_it_does_nothing(monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert not ensure_bytecode()
