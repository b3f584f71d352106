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

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from splice.adapters import adapters_disabled, has_adapters
from splice.objectives.logprobs import batch_model_inputs, token_logprobs
from torch import Tensor, nn

from splice_dpo.data import PreferenceExample
from splice_dpo.packing import sequence_sums

FILENAME = "reference_logps.safetensors"
SPLITS = ("train", "held_out")


@torch.no_grad()
def precompute_reference_logps(
    model: nn.Module,
    pairs: Sequence[PreferenceExample],
    collate: Callable[[list[PreferenceExample]], dict[str, Any]],
    *,
    batch_size: int = 32,
    adapters_off: bool = True,
) -> Tensor:
    """``(N, 2)`` float32 summed completion log-probs ``[chosen, rejected]`` of each pair
    under ``model`` as it is now (eval mode; adapter layers off unless ``adapters_off=False``)."""
    import contextlib

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[Tensor] = []
    try:
        with adapters_disabled(model) if adapters_off else contextlib.nullcontext():
            for start in range(0, len(pairs), batch_size):
                chunk = list(pairs[start : start + batch_size])
                batch = {
                    k: v.to(device) if isinstance(v, Tensor) else v
                    for k, v in collate(chunk).items()
                }
                tokens = token_logprobs(
                    model, batch["input_ids"], batch["score_mask"], **batch_model_inputs(batch)
                )
                n = len(chunk)
                seq, _ = sequence_sums(
                    tokens.logprobs, tokens.mask, batch.get("sequence_ids"), 2 * n
                )  # (2b,)
                out.append(torch.stack([seq[:n], seq[n:]], dim=1).float().cpu())  # (b, 2)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)


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
