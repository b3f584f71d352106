"""A study's files: ``study.json`` (the data), ``report.md`` (claims with intervals and
verdicts, then every arm's metrics) and one PNG per claim."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from splice_recipes.study.plots import plot_claim
from splice_recipes.study.result import ClaimResult, StudyResult
from splice_recipes.study.stats import t_interval


def _clean(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity: write null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented strict JSON (NaN/inf written as null); creates the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p


def fmt(x: float, scale: float = 1.0, unit: str = "") -> str:
    """A number in 4 significant digits (``-inf``/``inf`` as unbounded)."""
    if not math.isfinite(x):
        return "unbounded" if math.isinf(x) else "nan"
    return f"{x * scale:.4g}{unit}"


def interval_text(cr: ClaimResult) -> str:
    """``+3.2 pt [+1.1, +5.3]``: the mean difference and its interval."""
    c, iv = cr.claim, cr.interval
    if not math.isfinite(iv.low):
        return f"{iv.mean * c.scale:+.3g}{c.unit} (1 seed: no interval)"
    return f"{iv.mean * c.scale:+.3g}{c.unit} [{iv.low * c.scale:+.3g}, {iv.high * c.scale:+.3g}]"


def time_text(result: StudyResult) -> str:
    """``wall 12.3 min at load 9.8 -> 4.1 on 2 CPUs, CPU 540 s``: the study's wall time,
    the 1-minute load average at its start and end, and its process CPU seconds (a wall time
    on a loaded machine is not the code's speed; the CPU seconds are closer to it)."""
    env = result.environment
    text = f"wall {result.wall_time_s / 60:.1f} min"
    start, end = env.get("load_average_1min"), env.get("load_average_1min_end")
    if isinstance(start, int | float):
        text += f" at load {start:.1f}" + (f" -> {end:.1f}" if isinstance(end, int | float) else "")
        if env.get("cpu_count"):
            text += f" on {env['cpu_count']} CPUs"
    if result.cpu_time_s is not None:
        text += f", CPU {result.cpu_time_s:.0f} s"
    return text


def environment_line(result: StudyResult) -> str:
    env = result.environment
    return (
        f"{len(result.seeds)} seeds ({', '.join(map(str, result.seeds))}), "
        f"precision {env.get('precision')}, {env.get('machine_class')}, torch {env.get('torch')}; "
        + time_text(result)
    )


def report_markdown(result: StudyResult) -> str:
    """The study's ``report.md``."""
    conf = f"{result.confidence:.0%}"
    lines = [
        f"# {result.name}",
        "",
        environment_line(result) + ".",
        "",
        "## Claims",
        "",
        f"Each claim pairs two arms by seed (same seed, same data): the difference per seed, "
        f"its mean and the {conf} Student t interval of the mean (n - 1 degrees of freedom). "
        "A claim reads **shown** only when the interval excludes zero (or the claim's stated "
        'margin, as in "loses at most N points") on the claimed side; otherwise **not shown**.',
        "",
        f"| claim | mean difference [{conf} interval] | seeds | verdict |",
        "|---|---|---:|---|",
    ]
    for cr in result.claims:
        lines.append(
            f"| {cr.claim.sentence} | {interval_text(cr)} | {cr.interval.n} | **{cr.verdict}** |"
        )
    lines.append("")
    for cr in result.claims:
        lines.append(f"![{cr.claim.name}]({cr.claim.name}.png)")
    metrics = sorted({m for runs in result.figures.values() for r in runs.values() for m in r})
    if metrics:
        lines += ["", "## Arms", "", f"Mean over seeds +- half-width of the {conf} interval.", ""]
        lines.append("| arm | " + " | ".join(metrics) + " |")
        lines.append("|---|" + "---:|" * len(metrics))
        for arm, runs in result.figures.items():
            cells = []
            for m in metrics:
                xs = [
                    float(r[m])
                    for r in runs.values()
                    if isinstance(r.get(m), int | float) and math.isfinite(r[m])
                ]
                if not xs:
                    cells.append("-")
                    continue
                iv = t_interval(xs, result.confidence)
                hw = f" +- {iv.half_width:.3g}" if math.isfinite(iv.half_width) else ""
                cells.append(f"{iv.mean:.4g}{hw}")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    for key, value in result.extras.items():  # the recipe's own tables
        if isinstance(value, str) and value.startswith("|"):
            lines += ["", f"## {key.replace('_', ' ')}", "", value]
    return "\n".join(lines) + "\n"


def write_study(result: StudyResult, folder: str | Path) -> Path:
    """Write ``study.json``, ``report.md`` and ``<claim>.png`` into ``folder``; returns the
    ``study.json`` path."""
    out = Path(folder)
    path = write_json(out / "study.json", result.to_json())
    (out / "report.md").write_text(report_markdown(result), encoding="utf-8")
    for cr in result.claims:
        plot_claim(cr, out / f"{cr.claim.name}.png")
    return path
