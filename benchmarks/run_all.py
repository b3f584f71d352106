"""Run every ``benchmarks/bench_*.py`` (each exposes ``main(quick=False)``) and report failures.

Usage: ``.venv/bin/python benchmarks/run_all.py [--quick] [-k NAME ...]``. Each benchmark
writes its own section of ``docs/benchmarks.md``, unless the run was ``--quick`` or the load
average exceeded the cores while it ran (see ``harness.write_section``); one failing
benchmark does not stop the others, but makes the exit status non-zero.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[Path]:
    files = sorted(HERE.glob("bench_*.py"))
    if only:
        files = [f for f in files if any(k in f.stem for k in only)]
    return files


def run_one(path: Path, *, quick: bool) -> None:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    main = getattr(module, "main", None)
    if main is None:
        raise AttributeError(f"{path.name} has no main(quick=False) function")
    from harness import begin_run

    begin_run(quick=quick)  # per benchmark: its own peak load decides whether it writes
    main(quick=quick)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer rounds and smaller shapes")
    p.add_argument(
        "-k", action="append", dest="only", help="run only benchmarks whose name contains this"
    )
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))  # so bench files can `from harness import ...`
    failed: list[str] = []
    for path in discover(args.only):
        print(f"== {path.stem}", flush=True)
        t0 = time.perf_counter()
        try:
            run_one(path, quick=args.quick)
            print(f"== {path.stem}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(path.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
