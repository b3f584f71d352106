"""The ``dpo`` study's diagnosis: the per-token log-probs of the chosen and the rejected
answers over training, read from each run's logged training steps (each step logs its
batch's means as ``logps/chosen`` and ``logps/rejected``; a composed objective logs them
under its term's name, e.g. ``dpo/logps/chosen``). The curves are averaged over seeds and
over windows of steps (one batch of 32 pairs is noisy); the plot draws them per arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

SIDES = ("chosen", "rejected")


def logged_logps(metrics_path: Path, side: str) -> list[tuple[int, float]]:
    """``(step, per-token log-prob of the side's answers)`` of every logged training step.

    Raises:
        ValueError: no training record of the file has a key ending in ``logps/<side>``.
    """
    from splice.training.metrics import read_metrics

    key = f"logps/{side}"
    out = [
        (int(r["step"]), float(v))
        for r in read_metrics(metrics_path)
        if r.get("kind") == "train"
        for k, v in r.items()
        if k.endswith(key) and v is not None
    ]
    if not out:
        raise ValueError(f"{metrics_path}: no training record has {key!r}")
    return out


def windowed_curve(runs: Sequence[Sequence[tuple[int, float]]], window: int) -> list[list[float]]:
    """Runs' ``(step, value)`` logs -> ``[[last step of window, mean], ...]``: the values of
    every run within each window of ``window`` consecutive steps, averaged (steps ``1..w``,
    ``w+1..2w``, ...; a last, shorter window is kept).

    Raises:
        ValueError: no runs, or ``window`` < 1.
    """
    if not runs or window < 1:
        raise ValueError(f"need runs and a window >= 1, got {len(runs)} runs, window {window}")
    bins: dict[int, list[float]] = {}
    last: dict[int, int] = {}
    for run in runs:
        for step, value in run:
            b = (step - 1) // window
            bins.setdefault(b, []).append(value)
            last[b] = max(last.get(b, 0), step)
    return [[float(last[b]), math.fsum(bins[b]) / len(bins[b])] for b in sorted(bins)]


def curves(run_dirs: dict[str, list[Path]], window: int) -> dict[str, dict[str, list[list[float]]]]:
    """``{arm: {side: [[step, mean over seeds and window], ...]}}`` for each arm's runs."""
    return {
        arm: {
            side: windowed_curve([logged_logps(d / "metrics.jsonl", side) for d in dirs], window)
            for side in SIDES
        }
        for arm, dirs in run_dirs.items()
    }


def plot_curves(
    data: dict[str, dict[str, list[list[float]]]],
    start: dict[str, float],
    path: Path,
    *,
    seeds: int,
) -> Path:
    """One panel per arm: chosen (blue) and rejected (red) per-token log-prob over training;
    dotted lines: the SFT start's values on all the pairs (``start``, keyed by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(data)
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 3.4), sharey=True)
    axes = [axes] if len(arms) == 1 else list(axes)
    colors = {"chosen": "tab:blue", "rejected": "tab:red"}
    for ax, arm in zip(axes, arms):
        for side in SIDES:
            steps = [p[0] for p in data[arm][side]]
            ax.plot(steps, [p[1] for p in data[arm][side]], "-o", ms=3, color=colors[side],
                    label=f"{side} (training batches)")  # fmt: skip
            if side in start:
                ax.axhline(start[side], color=colors[side], ls=":", lw=1,
                           label=f"{side}, SFT start (all pairs)")  # fmt: skip
        ax.set_title(arm)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"per-token log-prob (mean of {seeds} seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
