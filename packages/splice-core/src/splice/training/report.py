"""End-of-run artefacts: ``curves.png`` (loss and eval curves) and ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splice.training.metrics import read_metrics


def plot_curves(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot training loss and every eval metric against the step; None if nothing to plot."""
    records = read_metrics(metrics_path) if Path(metrics_path).is_file() else []
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    eval_keys = sorted(
        {
            k
            for r in evals
            for k, v in r.items()
            if k not in ("kind", "step") and isinstance(v, (int, float))
        }
    )
    n = 1 + (1 if eval_keys else 0)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label="train loss")
    for r_key in ("eval_loss",):
        pts = [(r["step"], r[r_key]) for r in evals if r.get(r_key) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=r_key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(r["loss"] > 0 for r in train):  # RL losses (PPO, GRPO) can be negative
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    if eval_keys:
        ax2 = axes[0][1]
        for k in eval_keys:
            if "loss" in k:
                continue
            pts = [(r["step"], r[k]) for r in evals if r.get(k) is not None]
            if pts:
                ax2.plot(*zip(*pts), "o-", label=k)
        ax2.set_xlabel("step")
        ax2.set_title("evaluation")
        ax2.legend()
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: dict[str, Any],
    final_eval: dict[str, Any] | None = None,
    plot: str | None = None,
) -> Path:
    """A short Markdown report: summary table, final evaluation, the curves plot."""
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    if final_eval:
        lines += ["", "## Final evaluation", "", "| metric | value |", "|---|---|"]
        lines += [
            f"| {k} | {_fmt(v)} |" for k, v in final_eval.items() if k not in ("kind", "step")
        ]
    if plot:
        lines += ["", f"![training curves]({plot})"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finish_run(trainer: Any, final: dict[str, Any], *, resumed: bool) -> dict[str, Any]:
    """The summary ``Trainer.fit`` returns (steps, final loss, time, throughput, counts,
    final eval, paths), after writing ``curves.png`` and ``report.md`` on the main process."""
    summary = run_summary(trainer, final, resumed=resumed)
    run_dir = trainer.run_dir
    if run_dir is not None and trainer.is_main:
        plot = trainer.config.plot_curves
        write_run_report(run_dir, summary, final, title=trainer.title, plot=plot)
        summary["run_dir"] = str(run_dir)
        last = trainer.checkpoints.last
        summary["checkpoint"] = str(last) if last else None
    summary["eval"] = {k: v for k, v in final.items() if k not in ("kind", "step")}
    return summary


def run_summary(trainer: Any, final: dict[str, Any], *, resumed: bool) -> dict[str, Any]:
    """Steps, final loss, time, throughput and parameter counts of a finished run."""
    from splice.training.optimizer import trainable_summary

    return {
        "steps": trainer.step,
        "final_train_loss": trainer.last_loss,
        "train_time_s": round(trainer.train_time, 2),
        "tokens_seen": trainer.tokens_seen,
        "tokens_per_s": round(trainer.tokens_seen / max(trainer.train_time, 1e-9), 1),
        **trainable_summary(trainer.model),
        "resumed": resumed,
        "precision": trainer.precision,
    }


def write_run_report(
    run_dir: Path, summary: dict[str, Any], final: dict[str, Any], *, title: str, plot: bool
) -> None:
    """``curves.png`` (when ``plot``) and ``report.md`` of a finished run in ``run_dir``."""
    png = plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png") if plot else None
    write_report(
        run_dir / "report.md",
        title=title,
        summary=summary,
        final_eval=final,
        plot=png.name if png else None,
    )
