"""Shared benchmark harness: machine peak, side-by-side timing, and ``docs/benchmarks.md`` sections.

Benchmarks are not tests. Each ``benchmarks/bench_<name>.py`` measures splice next
to a reference (a peer library or a bare PyTorch call) *in the same process*,
alternating the candidates round by round so that drift in machine load hits
both alike, and writes its own section of ``docs/benchmarks.md``.

Writing a new benchmark (``benchmarks/bench_<name>.py``)::

    from harness import bench_args, compare, configure_threads, write_section

    def main(quick: bool = False) -> str:
        configure_threads()                      # same thread count for every candidate
        model, peer, batch = ...                 # build everything outside the timed calls
        result = compare(
            {"splice": lambda: model(batch), "transformers": lambda: peer(batch)},
            baseline="transformers", warmup=2, rounds=3 if quick else 15,
        )
        body = result.table() + f"\\n\\nTarget: splice >= 2x. Measured: {result.speedup('splice'):.2f}x."
        return write_section("generation", "Generation tokens/s vs transformers", body)

    if __name__ == "__main__":
        main(**bench_args())

- ``compare`` returns a ``Comparison``: ``median(name)`` seconds, ``ratio(name)`` =
  time(name) / time(baseline) as the median of per-round ratios (lower is faster),
  ``speedup(name)`` = its inverse,
  ``table()`` a Markdown table (pass ``work={"name": units}`` and ``unit_name`` to add a
  throughput column, e.g. tokens/s).
- ``matmul_peak()`` (GFLOP/s) and ``stream_bandwidth()`` (GB/s, a matrix-vector product
  over a matrix much bigger than the last-level cache) are the machine's two ceilings:
  compute-bound work is set against the first, weight-streaming decode steps the second.
- ``write_section(key, title, body)`` replaces the text between
  ``<!-- bench:key:begin -->`` and ``<!-- bench:key:end -->`` (or appends a new section),
  keeps every other section, prefixes the body with the machine line (CPU, threads,
  torch, measured float32/bfloat16 matmul peak, load average), and writes atomically.
- A section is reference figures only from a full run on a quiet machine: ``write_section``
  refuses to write it (and prints why) after a ``--quick`` run, or when the 1-minute load
  average exceeded the machine's cores at any point of the run (sampled every few seconds
  from ``begin_run`` on, and at each ``compare`` round). ``SPLICE_BENCH_WRITE_ANYWAY=1``
  writes it anyway, with a bold line at its top saying which condition it failed.
- ``run_all.py`` imports every ``bench_*.py`` and calls ``main(quick=...)`` after
  ``begin_run(quick=...)``; keep module import cheap (build models inside ``main``).
- Run from the repository root: ``.venv/bin/python benchmarks/bench_<name>.py [--quick]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Measured by `benchmarks/` (`nox -s bench`, or `.venv/bin/python benchmarks/run_all.py`).
Every section is written by one `bench_*.py` from its own run: candidates are timed in
one process, alternating round by round after a warm-up, and reported as medians with
ratios. Each section states the machine it ran on and that machine's measured matmul peak,
so figures from different machines are not mixed up silently.
A section is rewritten only by a full run (not `--quick`) during which the 1-minute load
average stayed at or below the machine's cores; otherwise the run prints why and the
previous figures stay (`SPLICE_BENCH_WRITE_ANYWAY=1` writes it with a bold "Not reference
figures" line naming the reason).
"""


# --------------------------------------------------------------------------- run conditions
#: Set to 1 to write a section whose run was quick or loaded, marked as such.
WRITE_ANYWAY_ENV = "SPLICE_BENCH_WRITE_ANYWAY"
LOAD_SAMPLE_S = 5.0  # how often the background sampler reads the load average


@dataclass
class _Run:
    """This process's benchmark run: quick or not, and the peak load average seen so far."""

    quick: bool = False
    peak_load: float = 0.0
    sampler: threading.Thread | None = None


_RUN = _Run()


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def sample_load() -> float:
    """Read the load average now into the run's peak; returns the peak."""
    avg = load_average()
    if avg is not None:
        _RUN.peak_load = max(_RUN.peak_load, avg)
    return _RUN.peak_load


def _sample_forever() -> None:
    while True:
        sample_load()
        time.sleep(LOAD_SAMPLE_S)


def begin_run(*, quick: bool = False) -> None:
    """Start a benchmark run: remember ``quick``, reset the peak load, keep sampling it."""
    _RUN.quick, _RUN.peak_load = quick, 0.0
    sample_load()
    if _RUN.sampler is None and load_average() is not None:
        _RUN.sampler = threading.Thread(target=_sample_forever, name="load-sampler", daemon=True)
        _RUN.sampler.start()


def run_problems(*, quick: bool | None = None) -> list[str]:
    """Why this run's figures are not reference figures (empty when they are).

    ``quick``: whether the run was a quick one (None: as ``begin_run`` was told).
    """
    problems = []
    if _RUN.quick if quick is None else quick:
        problems.append("a --quick run (fewer rounds, smaller shapes)")
    peak, cores = sample_load(), os.cpu_count() or 1
    if peak > cores:
        problems.append(f"the load average reached {peak:.1f} on {cores} cores during the run")
    return problems


# --------------------------------------------------------------------------- machine
def configure_threads(n: int | None = None) -> int:
    """Use ``n`` intra-op threads (default: ``$SPLICE_BENCH_THREADS`` or every CPU core)."""
    n = n or int(os.environ.get("SPLICE_BENCH_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def device() -> torch.device:
    """The device benchmarks run on: CUDA if present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


_PEAK: dict[tuple[str, str, int], float] = {}


def measure_matmul(dtype: torch.dtype = torch.float32, *, n: int = 1024, repeats: int = 7) -> float:
    """Best of ``repeats`` ``n x n @ n x n`` matmuls *now*, in GFLOP/s (``2 n^3`` FLOPs).

    Uncached: a benchmark that pairs each round with the peak at that moment's load calls
    this; ``matmul_peak`` caches one reading per process.
    """
    dev = device()
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    for _ in range(2):
        a @ b
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def matmul_peak(dtype: torch.dtype = torch.float32, *, n: int = 1024, repeats: int = 7) -> float:
    """``measure_matmul`` once per (dtype, device, thread count) in this process, in GFLOP/s."""
    key = (str(dtype), device().type, torch.get_num_threads())
    if key not in _PEAK:
        _PEAK[key] = measure_matmul(dtype, n=n, repeats=repeats)
    return _PEAK[key]


_BANDWIDTH: dict[tuple[str, int], float] = {}


def stream_bandwidth(*, mbytes: int = 256, repeats: int = 7) -> float:
    """Best observed weight-streaming rate in GB/s: a float32 matrix-vector product over a
    ``mbytes`` MB matrix (far bigger than any last-level cache), cached per process.

    This is the rate a decode step reads its weights at, one token per row: every weight is
    used once per step, so ``bytes read / stream_bandwidth()`` is that step's lower bound.
    """
    dev = device()
    key = (dev.type, torch.get_num_threads())
    if key not in _BANDWIDTH:
        cols = 4096
        w = torch.randn(mbytes * 2**20 // (4 * cols), cols, device=dev)
        x = torch.randn(cols, device=dev)
        for _ in range(2):
            w @ x
        synchronize()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            w @ x
            synchronize()
            best = min(best, time.perf_counter() - t0)
        _BANDWIDTH[key] = w.nbytes / best / 1e9
    return _BANDWIDTH[key]


def native(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` matmuls run natively on the benchmark device (float32 always does).

    On a CPU without AVX512-BF16/AMX, bf16 is emulated ~30-100x slower than float32: a
    low-precision section there is marked "not native on this machine" instead of being
    run for an hour (see ``splice.training.precision``).
    """
    if dtype == torch.float32:
        return True
    from splice.training.precision import bf16_is_native

    return bf16_is_native(device())


def not_native_note(what: str) -> str:
    """The Markdown a section shows instead of figures when its dtype is emulated here."""
    from splice.training.precision import bf16_slowdown

    ratio = (
        f", measured {bf16_slowdown():.0f}x slower than float32" if device().type == "cpu" else ""
    )
    return (
        f"*{what}: not native on this machine* (CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}: bf16 matmuls are emulated{ratio}); "
        "not run. Measure it on a CPU with AVX512-BF16/AMX or a CUDA GPU."
    )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One Markdown line describing where and how a section was measured."""
    dev = device()
    where = torch.cuda.get_device_name() if dev.type == "cuda" else cpu_name()
    load = ""
    avg = load_average()
    if avg is not None:
        load = f" · load avg {avg:.1f} (peak {sample_load():.1f}) on {os.cpu_count() or 1} cores"
    capability = f" · CPU capability {torch.backends.cpu.get_cpu_capability()}"
    bf16 = (
        f"bfloat16 {matmul_peak(torch.bfloat16):.0f} GFLOP/s"
        if native(torch.bfloat16)
        else "bfloat16 not native (emulated)"
    )
    return (
        f"*{_dt.date.today().isoformat()} · {dev.type}: {where}{capability}"
        f" · {torch.get_num_threads()} threads · torch {torch.__version__}"
        f" · matmul peak float32 {matmul_peak(torch.float32):.0f} GFLOP/s, {bf16}{load}*"
    )


# --------------------------------------------------------------------------- timing
@dataclass
class Comparison:
    """Per-candidate wall-clock samples (seconds) from one alternating run."""

    samples: dict[str, list[float]]
    baseline: str
    meta: dict[str, Any] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, name: str) -> float:
        """``time(name) / time(baseline)``: below 1 means ``name`` is faster.

        The median of per-round ratios: both samples of a round ran back to back, so a
        load spike on a shared machine hits both and cancels out of the ratio.
        """
        pairs = zip(self.samples[name], self.samples[self.baseline])
        return statistics.median(a / b for a, b in pairs)

    def speedup(self, name: str) -> float:
        """``time(baseline) / time(name)``: above 1 means ``name`` is faster."""
        return 1.0 / self.ratio(name)

    def table(self, *, work: Mapping[str, float] | None = None, unit_name: str = "") -> str:
        """Markdown: candidate, median ms, spread (min-max), ratio to baseline[, throughput]."""
        head = "| candidate | median ms | min–max ms | time / baseline (paired median) |"
        sep = "|---|---:|---:|---:|"
        if work:
            head += f" {unit_name} |"
            sep += "---:|"
        rows = [head, sep]
        for name, s in self.samples.items():
            row = (
                f"| {name} | {1e3 * self.median(name):.2f} | {1e3 * min(s):.2f}–{1e3 * max(s):.2f}"
                f" | {self.ratio(name):.3f} |"
            )
            if work:
                row += f" {work[name] / self.median(name):,.0f} |"
            rows.append(row)
        return "\n".join(rows)


def compare(
    candidates: Mapping[str, Callable[[], object]],
    *,
    baseline: str | None = None,
    warmup: int = 2,
    rounds: int = 10,
    inner: int = 1,
) -> Comparison:
    """Time each callable side by side: ``warmup`` untimed calls each, then ``rounds`` rounds.

    In every round each candidate runs ``inner`` times back to back (one sample = mean
    of those); the order rotates each round (A B C, B C A, ...) so no candidate always
    runs right after the same neighbour. CUDA is synchronised around every sample.
    """
    names = list(candidates)
    if not names:
        raise ValueError("compare() needs at least one candidate")
    baseline = baseline or names[0]
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not one of the candidates {names}")
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    synchronize()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        sample_load()  # between rounds: a load spike inside a short run is still seen
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = candidates[name]
            synchronize()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            synchronize()
            samples[name].append((time.perf_counter() - t0) / inner)
    return Comparison(samples, baseline, {"warmup": warmup, "rounds": rounds, "inner": inner})


# --------------------------------------------------------------------------- docs/benchmarks.md
def _markers(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"


def write_section(
    key: str, title: str, body: str, *, quick: bool | None = None, path: Path | None = None
) -> str:
    """Replace (or append) section ``key`` of ``docs/benchmarks.md``; return the section text.

    Not written when ``run_problems(quick=quick)`` finds any (a quick run, or a load average
    above the cores during the run): the section's figures would mislead, so the file keeps
    its previous ones and the reason is printed. With ``SPLICE_BENCH_WRITE_ANYWAY=1`` it is
    written, its first line naming the problems.
    """
    path = path or DOCS
    begin, end = _markers(key)
    problems = run_problems(quick=quick)
    if problems:
        body = f"**Not reference figures: {'; '.join(problems)}.**\n\n{body.strip()}"
    section = f"{begin}\n## {title}\n\n{machine_line()}\n\n{body.strip()}\n{end}"
    if problems and os.environ.get(WRITE_ANYWAY_ENV) != "1":
        print(
            f"{path.name}: section {key!r} NOT written ({'; '.join(problems)}); "
            f"set {WRITE_ANYWAY_ENV}=1 to write it marked",
            file=sys.stderr,
            flush=True,
        )
        return section
    path.parent.mkdir(parents=True, exist_ok=True)
    # Benchmarks may run in parallel processes: serialise the read-modify-write with a lock
    # file, and write through a per-process temp file renamed into place (atomic).
    with open(Path(tempfile.gettempdir()) / "splice-benchmarks-md.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else HEADER
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + section + tail
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        tmp = path.with_suffix(f".md.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return section


def bench_args(argv: list[str] | None = None) -> dict[str, Any]:
    """``--quick`` (fewer rounds) for a benchmark's ``main(**bench_args())``; begins the run."""
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer rounds and smaller shapes")
    args = vars(p.parse_args(argv))
    begin_run(quick=args["quick"])
    return args
