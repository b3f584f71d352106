"""One PNG per claim: each seed's paired values of the two arms, and the per-seed
differences with their mean and confidence interval against zero."""

from __future__ import annotations

import math
from pathlib import Path

from splice_recipes.study.result import ClaimResult


def plot_claim(result: ClaimResult, path: str | Path) -> Path:
    """Left: the metric per seed for arm and baseline (a line joins one seed's pair).
    Right: the differences per seed, their mean and interval, the zero line; the title
    carries the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, iv = result.claim, result.interval
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), width_ratios=[1.2, 1])
    base_label = str(c.baseline)
    for i, seed in enumerate(result.seeds):
        a = result.arm_values[i] * c.scale
        b = (
            result.baseline_values[i] if result.baseline_values is not None else float(c.baseline)
        ) * c.scale
        left.plot([0, 1], [b, a], "-o", color="0.6", lw=0.8, ms=4)
        left.annotate(f"s{seed}", (1, a), xytext=(4, 0), textcoords="offset points", fontsize=7)
    left.set_xticks([0, 1], [base_label, c.arm])
    left.set_xlim(-0.4, 1.4)
    left.set_ylabel(f"{c.metric}{' (x' + format(c.scale, 'g') + ')' if c.scale != 1 else ''}")
    left.grid(alpha=0.3)
    diffs = [d * c.scale for d in result.differences]
    right.scatter([0.0] * len(diffs), diffs, color="0.4", s=14, zorder=3, label="seeds")
    mean = iv.mean * c.scale
    if math.isfinite(iv.low):
        right.errorbar(
            [0.3],
            [mean],
            yerr=[[mean - iv.low * c.scale], [iv.high * c.scale - mean]],
            fmt="o",
            color="C0" if result.verdict == "shown" else "C3",
            capsize=6,
            label=f"mean, {iv.confidence:.0%} {iv.method} interval",
        )
    else:
        right.plot([0.3], [mean], "o", color="C3", label="mean (one seed: no interval)")
    right.axhline(0.0, color="k", lw=0.8)
    if c.margin:  # the line a non-inferiority (or margin) claim's interval must clear
        right.axhline(c.margin * c.scale, color="C1", lw=0.8, ls="--", label="margin")
    right.set_xlim(-0.5, 0.8)
    right.set_xticks([])
    right.set_ylabel(f"{c.arm} - {base_label}{c.unit}")
    right.legend(fontsize=7, loc="best")
    right.grid(alpha=0.3)
    fig.suptitle(f"{c.sentence}: {result.verdict}", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
