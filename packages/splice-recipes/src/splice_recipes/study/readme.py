"""The README's recipe table, generated from published ``study.json`` files.

``python -m splice_recipes.study.readme docs/results README.md`` rewrites the table between
the markers ``<!-- study-table:begin -->`` and ``<!-- study-table:end -->``; ``--check``
only reports whether it is current (exit 1 if not). ``--publish RUN_DIR`` first copies a
finished study's ``study.json``, ``report.md`` and plots into ``docs/results/<name>/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from splice_recipes.study.report import interval_text, write_json
from splice_recipes.study.result import StudyResult

BEGIN, END = "<!-- study-table:begin -->", "<!-- study-table:end -->"


def find_studies(results_dir: str | Path) -> list[StudyResult]:
    """Every ``<results_dir>/*/study.json``, sorted by study name."""
    paths = sorted(Path(results_dir).glob("*/study.json"))
    return sorted((StudyResult.load(p) for p in paths), key=lambda r: r.name)


def table(studies: list[StudyResult]) -> str:
    """One row per claim: the recipe, the claim, mean difference [interval], seeds, verdict,
    precision, machine class and the study's time: wall (with the load average at its start
    and end) and process CPU seconds."""
    lines = [
        "| recipe | claim | mean difference [95% interval] | seeds | verdict | precision "
        "| machine | wall time (load start -> end); CPU |",
        "|---|---|---|---:|---|---|---|---:|",
    ]
    for st in studies:
        env = st.environment
        for cr in st.claims:
            lines.append(
                f"| `{st.name}` | {cr.claim.sentence} | {interval_text(cr)} | {cr.interval.n} "
                f"| **{cr.verdict}** | {env.get('precision')} | {env.get('machine_class')} "
                f"| {wall_time(st)} |"
            )
    return "\n".join(lines)


def wall_time(study: StudyResult) -> str:
    """``12.3 min (load 9.8 -> 4.1); CPU 540 s``: the study's wall time, the machine's
    1-minute load average at its start and end, and the CPU seconds its process used (wall
    times on a loaded machine are not the code's speed; CPU seconds are much closer). Older
    studies recorded the load at the start only and no CPU time: the cell says what exists.
    """
    env = study.environment
    start, end = env.get("load_average_1min"), env.get("load_average_1min_end")
    note = ""
    if isinstance(start, int | float):
        note = f" (load {start:.1f}" + (f" -> {end:.1f})" if isinstance(end, int | float) else ")")
    cpu = f"; CPU {study.cpu_time_s:.0f} s" if study.cpu_time_s is not None else ""
    return f"{study.wall_time_s / 60:.1f} min{note}{cpu}"


def splice_table(text: str, new_table: str, *, where: str = "README") -> str:
    """``text`` with the part between the markers replaced by ``new_table``.

    Raises:
        ValueError: the markers are missing or out of order (names ``where``).
    """
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"{where}: need the markers {BEGIN} ... {END} around the table")
    return text[: i + len(BEGIN)] + "\n" + new_table + "\n" + text[j:]


def publish(study_dir: str | Path, results_dir: str | Path) -> Path:
    """Copy a study folder's ``study.json`` (without its ``output_dir``), ``report.md`` and
    PNGs to ``<results_dir>/<name>/``; returns that folder."""
    src = Path(study_dir)
    name = StudyResult.load(src).name
    dest = Path(results_dir) / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in [src / "report.md", *sorted(src.glob("*.png"))]:
        shutil.copy2(f, dest / f.name)
    # the run folder is where it ran, not where it is published: drop it from the copy
    study = json.loads((src / "study.json").read_text(encoding="utf-8"))
    study["config"]["output_dir"] = None
    write_json(dest / "study.json", study)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m splice_recipes.study.readme",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results_dir", help="folder of published studies (<name>/study.json)")
    p.add_argument("readme", help="the Markdown file holding the table markers")
    p.add_argument("--check", action="store_true", help="exit 1 if the table is not current")
    p.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="copy a finished study folder into results_dir first",
    )
    args = p.parse_args(argv)
    for run_dir in args.publish:
        print(f"published {publish(run_dir, args.results_dir)}")
    readme = Path(args.readme)
    old = readme.read_text(encoding="utf-8")
    new = splice_table(old, table(find_studies(args.results_dir)), where=str(readme))
    if args.check:
        if new != old:
            print(f"{readme}: the study table is out of date; run without --check", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
