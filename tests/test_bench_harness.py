"""Benchmark sections that cannot mislead: ``benchmarks/harness.write_section`` keeps the
previous figures after a quick run or a run during which the load average exceeded the cores
(mocked here), and says why; forced, it writes the section marked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def harness(monkeypatch):
    """A fresh ``harness`` module with a 2-core machine whose load the test sets."""
    spec = importlib.util.spec_from_file_location(
        "bench_harness_under_test", BENCHMARKS / "harness.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    load = {"now": 0.5}
    monkeypatch.setattr(module, "load_average", lambda: load["now"])
    monkeypatch.setattr(module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(module, "machine_line", lambda: "*machine*")  # no matmul timing here
    monkeypatch.setattr(module, "_sample_forever", lambda: None)  # the test samples by hand
    monkeypatch.delenv(module.WRITE_ANYWAY_ENV, raising=False)
    module.set_load = lambda value: load.update(now=value)
    return module


OLD = "<!-- bench:x:begin -->\n## X\n\nold figures\n<!-- bench:x:end -->\n"


def _write(harness, path, **kwargs):
    return harness.write_section("x", "X", "| new | figures |", path=path, **kwargs)


def test_a_full_run_on_a_quiet_machine_writes_its_section(harness, tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(OLD)
    harness.begin_run(quick=False)
    harness.set_load(1.9)  # below the 2 cores
    harness.sample_load()
    _write(harness, path)
    text = path.read_text()
    assert "| new | figures |" in text and "old figures" not in text
    assert "Not reference figures" not in text


def test_a_quick_run_does_not_write(harness, tmp_path, capsys):
    path = tmp_path / "benchmarks.md"
    path.write_text(OLD)
    harness.begin_run(quick=True)
    section = _write(harness, path)
    assert path.read_text() == OLD  # the previous figures stay
    assert "| new | figures |" in section  # the caller still gets what was measured
    assert "section 'x' NOT written (a --quick run" in capsys.readouterr().err
    # ... and an explicit quick=False (a bench that knows) overrides the run's flag
    _write(harness, path, quick=False)
    assert "| new | figures |" in path.read_text()


def test_load_above_the_cores_at_any_point_of_the_run_does_not_write(harness, tmp_path, capsys):
    path = tmp_path / "benchmarks.md"
    path.write_text(OLD)
    harness.begin_run(quick=False)
    for value in (0.8, 3.4, 1.0):  # a spike mid-run; quiet again when the section is written
        harness.set_load(value)
        harness.sample_load()
    _write(harness, path)
    assert path.read_text() == OLD
    assert "the load average reached 3.4 on 2 cores during the run" in capsys.readouterr().err
    # a new run starts from a clean peak
    harness.begin_run(quick=False)
    _write(harness, path)
    assert "| new | figures |" in path.read_text()


def test_compare_samples_the_load_between_rounds(harness):
    harness.begin_run(quick=False)
    calls = iter([0.5, 0.5, 5.0, 0.5, 0.5, 0.5, 0.5])
    harness.load_average = lambda: next(calls, 0.5)
    harness.compare({"a": lambda: None, "b": lambda: None}, warmup=0, rounds=3)
    assert harness.run_problems(quick=False) == [
        "the load average reached 5.0 on 2 cores during the run"
    ]


def test_forced_write_marks_the_section(harness, tmp_path, monkeypatch):
    path = tmp_path / "benchmarks.md"
    path.write_text(OLD)
    monkeypatch.setenv(harness.WRITE_ANYWAY_ENV, "1")
    harness.begin_run(quick=True)
    harness.set_load(2.5)
    _write(harness, path)
    text = path.read_text()
    assert (
        "**Not reference figures: a --quick run (fewer rounds, smaller shapes); the load "
        "average reached 2.5 on 2 cores during the run.**" in text
    )
    assert "| new | figures |" in text


def test_bench_args_begins_the_run(harness):
    harness.bench_args(["--quick"])
    assert harness.run_problems() == ["a --quick run (fewer rounds, smaller shapes)"]
    harness.bench_args([])
    assert harness.run_problems() == []
