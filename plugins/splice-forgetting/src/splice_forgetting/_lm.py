"""Language-model helpers shared by the regularizers: forward a batch, next-token targets.

Batch convention (``splice.data.collate``): ``input_ids`` ``(B, T)``, ``attention_mask``
``(B, T)`` (1 real, 0 pad), optional ``labels`` ``(B, T)`` aligned with ``input_ids``
(-100 = no loss; the shift to next-token targets happens here), optional ``positions``,
``doc_ids`` and ``branch_ids`` for packed rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100


def forward_logits(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """``(B, T, V)`` logits of ``model`` on ``batch`` (padding and packing respected)."""
    kwargs = {
        k: batch[k] for k in ("attention_mask", "positions", "doc_ids", "branch_ids") if k in batch
    }
    out = model(batch["input_ids"], **kwargs)
    logits = getattr(out, "logits", out)
    if logits is None:
        raise ValueError("the model returned no logits; call it with return_logits=True")
    return logits  # type: ignore[no-any-return]


def next_token_targets(batch: Mapping[str, Any], *, use_labels: bool = True) -> Tensor:
    """``(B, T-1)`` target of each position ``t < T-1``: the token at ``t+1``, or -100.

    With ``use_labels`` and ``"labels"`` in the batch, only supervised tokens count;
    otherwise every real next token (``attention_mask == 1``) counts.
    """
    input_ids: Tensor = batch["input_ids"]
    if use_labels and "labels" in batch:
        return batch["labels"][:, 1:]  # type: ignore[no-any-return]
    targets = input_ids[:, 1:].clone()
    mask = batch.get("attention_mask")
    if mask is not None:
        targets[mask[:, 1:] == 0] = IGNORE_INDEX
    # Packed rows: a document's first token does not follow the previous document, and a
    # branch's first token (prefix sharing) does not follow the previous branch.
    doc_ids, branch_ids = batch.get("doc_ids"), batch.get("branch_ids")
    if doc_ids is not None:
        targets[doc_ids[:, 1:] != doc_ids[:, :-1]] = IGNORE_INDEX
    if branch_ids is not None:
        new_branch = (branch_ids[:, 1:] != branch_ids[:, :-1]) & (branch_ids[:, :-1] != 0)
        targets[new_branch] = IGNORE_INDEX
    return targets


def token_nll(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Mean next-token negative log-likelihood over the batch's supervised tokens (a scalar)."""
    logits = forward_logits(model, batch)[:, :-1]  # (B, T-1, V)
    targets = next_token_targets(batch)
    if not bool((targets != IGNORE_INDEX).any()):
        raise ValueError("the batch has no supervised tokens (all labels are -100)")
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


def canonical_name(name: str) -> str:
    """A parameter name without wrapper prefixes (DDP ``module.``, ``torch.compile``'s ``_orig_mod.``)."""
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's trainable parameters by canonical name (tied weights appear once)."""
    return {canonical_name(n): p for n, p in model.named_parameters() if p.requires_grad}


__all__ = [
    "IGNORE_INDEX",
    "canonical_name",
    "forward_logits",
    "next_token_targets",
    "token_nll",
    "trainable_parameters",
]
