"""The study's clocks: process + children CPU seconds next to wall time, the load average at
both ends, and how the report and the README print them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from splice_recipes.study import StudyResult
from splice_recipes.study.machine import Clock
from splice_recipes.study.readme import wall_time
from splice_recipes.study.report import time_text

BURN = "import time\nwhile time.process_time() < 0.4:\n    pass\n"


def test_clock_counts_the_cpu_of_waited_for_children() -> None:
    clock = Clock.start()
    subprocess.run([sys.executable, "-c", BURN], check=True)  # 0.4 s of CPU in a child
    got = clock.stop()
    assert got["cpu_time_s"] >= 0.4  # the child's CPU is in (its interpreter start adds more)
    assert got["wall_time_s"] >= 0.4
    assert isinstance(got["load_start"], float) and isinstance(got["load_end"], float)


def test_clock_counts_this_process_and_not_sleep() -> None:
    import time

    clock = Clock.start()
    time.sleep(0.3)  # wall time passes, almost no CPU
    t = time.process_time()
    while time.process_time() - t < 0.2:
        pass
    got = clock.stop()
    assert got["wall_time_s"] >= 0.5
    assert 0.2 <= got["cpu_time_s"] < 0.45


def _study(env: dict, cpu: float | None) -> StudyResult:
    return StudyResult("s", {}, env, [0], {}, [], wall_time_s=738.0, cpu_time_s=cpu)


@pytest.mark.parametrize(
    ("env", "cpu", "cell", "line"),
    [
        (
            {"load_average_1min": 9.84, "load_average_1min_end": 4.06, "cpu_count": 2},
            540.4,
            "12.3 min (load 9.8 -> 4.1); CPU 540 s",
            "wall 12.3 min at load 9.8 -> 4.1 on 2 CPUs, CPU 540 s",
        ),
        # a study published before the CPU time and the end load were recorded
        ({"load_average_1min": 10.8}, None, "12.3 min (load 10.8)", "wall 12.3 min at load 10.8"),
        ({}, None, "12.3 min", "wall 12.3 min"),
    ],
)
def test_time_cells_say_what_was_measured(env, cpu, cell, line) -> None:
    st = _study(env, cpu)
    assert wall_time(st) == cell
    assert time_text(st) == line
    back = StudyResult.from_json(st.to_json())
    assert back.cpu_time_s == cpu and wall_time(back) == cell
