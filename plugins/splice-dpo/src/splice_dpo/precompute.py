"""Reference log-probs computed once over a finite preference dataset, saved beside the run.

With ``DPOConfig.precompute_reference`` the reference model never runs during training:
before the first step, the starting model (with its adapters off, if it has any) scores
every pair of the task's splits, the values are written to
``<run_dir>/reference_logps.safetensors`` and attached to the examples, and the collator
puts them in each batch. The file records a fingerprint of the data, the length limit and
the starting weights; a later run or a resume with the same fingerprint loads it instead
of recomputing (a different fingerprint recomputes and overwrites it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from splice.adapters import adapters_disabled, has_adapters
from torch import Tensor, nn

from splice_dpo.data import PreferenceExample
from splice_dpo.readout import completion_logps

FILENAME = "reference_logps.safetensors"
SPLITS = ("train", "held_out")


def precompute_reference_logps(
    model: nn.Module,
    pairs: Sequence[PreferenceExample],
    collate: Callable[[list[PreferenceExample]], dict[str, Any]],
    *,
    batch_size: int = 32,
    adapters_off: bool = True,
) -> Tensor:
    """``(N, 2)`` float32 summed completion log-probs ``[chosen, rejected]`` of each pair
    under ``model`` as it is now (eval mode; adapter layers off unless ``adapters_off=False``),
    read in ``collate``'s layout (``splice_dpo.readout.completion_logps``)."""
    with adapters_disabled(model) if adapters_off else contextlib.nullcontext():
        sums, _ = completion_logps(model, pairs, collate, batch_size=batch_size)
    return sums


def fingerprint(
    model: nn.Module,
    splits: dict[str, Sequence[PreferenceExample]],
    max_len: int,
    mode: str = "auto",
) -> str:
    """A hash of the pairs' texts, ``max_len`` and the starting weights (every parameter's
    shape, sum and first 1024 values: cheap, and any real change of weights shows)."""
    h = hashlib.sha256(f"max_len={max_len};adapters={has_adapters(model)};{mode}".encode())
    for name, pairs in splits.items():
        h.update(f"\x00{name}:{len(pairs)}".encode())
        for p in pairs:
            h.update(f"\x01{p.prompt}\x02{p.chosen}\x03{p.rejected}".encode())
    with torch.no_grad():
        for pname, param in model.state_dict().items():
            flat = param.detach().flatten()
            h.update(f"\x04{pname}{tuple(param.shape)}{float(flat.float().sum()):.8e}".encode())
            h.update(flat[:1024].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _splits(task: Any) -> dict[str, list[PreferenceExample]]:
    out: dict[str, list[PreferenceExample]] = {}
    for name in SPLITS:
        try:
            out[name] = list(task.split(name))
        except ValueError:  # an empty held-out split: nothing to precompute
            continue
    return out


def attach_precomputed_reference(context: Any, *, mode: str = "auto") -> Path:
    """Load or compute the reference log-probs of ``context.task`` and attach them.

    Args:
        context: a ``splice.training.experiment.RunContext`` (model at its starting weights).
        mode: the objective's reference mode: ``"copy"`` scores with the model as it is
            (adapters included), the others with adapter layers off.

    Returns:
        The path of the safetensors file.
    """
    task, model = context.task, context.model
    if not callable(getattr(task, "set_split", None)):
        raise ValueError(
            f"precompute_reference needs a finite preference task (e.g. 'preference_jsonl'), "
            f"got {type(task).__name__}"
        )
    if mode == "adapters_off" and not has_adapters(model):
        raise ValueError("reference mode 'adapters_off' needs a policy with adapter layers")
    splits = _splits(task)
    key = fingerprint(model, splits, context.max_len, mode)
    path = Path(context.run_dir) / FILENAME
    tables: dict[str, Tensor] | None = None
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            saved = (f.metadata() or {}).get("fingerprint")
        if saved == key:
            tables = load_file(str(path))
    if tables is None:
        tables = {
            name: precompute_reference_logps(
                model,
                pairs,
                context.collate,
                batch_size=context.batch_size,
                adapters_off=mode != "copy",
            )
            for name, pairs in splits.items()
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(tables, str(tmp), metadata={"fingerprint": key})
        tmp.replace(path)  # atomic: a crash never leaves half a file
    for name, pairs in splits.items():
        table = tables[name]
        task.set_split(
            name,
            [
                dataclasses.replace(p, ref_chosen=float(row[0]), ref_rejected=float(row[1]))
                for p, row in zip(pairs, table)
            ],
        )
    return path


__all__ = ["FILENAME", "attach_precomputed_reference", "fingerprint", "precompute_reference_logps"]
