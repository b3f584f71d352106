"""``evaluate_harness``: run lm-evaluation-harness tasks on a splice model (``splice eval --harness``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def evaluate_harness(
    tasks: Sequence[str],
    *,
    run: str | Path | None = None,
    pretrained: str | Path | None = None,
    include_path: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    dtype: str = "float32",
    device: str = "cpu",
    offline: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``tasks`` (lm-eval task or group names) with ``SpliceLM``.

    Args:
        tasks: task names; local ones live in YAML files under ``include_path``.
        run / pretrained: the model, as ``SpliceLM``'s ``run=`` / ``pretrained=``.
        include_path: a folder of task YAMLs (and the data files they name).
        limit: examples per task (an int) or a fraction of each task.
        offline: forbid Hugging Face Hub and dataset downloads (the default: local tasks).
        seed: lm-eval's python/numpy/torch/fewshot seeds.

    Returns:
        ``{"results": {task: {metric: value}}, "n_samples": ..., "configs": ...}``: lm-eval's
        result dict without its per-sample logs.

    Raises:
        ValueError: a task name that neither lm-eval nor ``include_path`` defines.
    """
    if offline:  # before lm-eval imports datasets/huggingface_hub, which read these once
        for key, value in OFFLINE_ENV.items():
            os.environ.setdefault(key, value)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from splice.harness.model import SpliceLM

    if not tasks:
        raise ValueError("no harness tasks given; expected e.g. --harness my_task")
    local = str(include_path) if include_path is not None else None
    # indexing lm-eval's own thousands of task YAMLs takes seconds: only when a task needs it
    manager = TaskManager(include_path=local, include_defaults=local is None)
    if local is not None and any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=local)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (looked in lm-eval and {include_path})" if include_path else ""
        raise ValueError(f"unknown lm-eval task(s) {unknown}{where}; pass --include-path DIR")
    lm = SpliceLM(
        run=str(run) if run is not None else None,
        pretrained=str(pretrained) if pretrained is not None else None,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
    )
    out = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        log_samples=False,
    )
    assert out is not None  # None only on non-zero ranks of a distributed run
    keep = ("results", "groups", "n-shot", "n-samples", "versions", "higher_is_better")
    return {k: out[k] for k in keep if k in out}


__all__ = ["OFFLINE_ENV", "evaluate_harness"]
