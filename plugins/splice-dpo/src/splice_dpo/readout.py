"""Each pair's completion log-probs under a model, read from batches in any layout.

The readout runs the same code path as training: ``collate`` makes the batches (the
``shared_prompt`` default, ``packed`` or ``padded``; ``splice_dpo.packing``) and
``splice_dpo.objective.sequence_logps`` adds each scored token's log-prob to its own
sequence through ``sequence_ids``, so a packed row holding several sequences (or a
prompt shared by two completions) is read per sequence, never per row. The reference
log-probs that ``precompute_reference`` saves and a recipe's before/after diagnosis both
read through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from splice_dpo.data import PreferenceExample
from splice_dpo.objective import sequence_logps


@torch.no_grad()
def completion_logps(
    model: nn.Module,
    pairs: Sequence[PreferenceExample],
    collate: Callable[[list[PreferenceExample]], dict[str, Any]],
    *,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """``(sums, counts)``, each ``(N, 2)`` float32 with columns ``[chosen, rejected]``: the
    summed log-prob of each pair's completion tokens (eos included) and their number.

    The model runs in eval mode (its mode is restored after), one forward per
    ``batch_size`` pairs, on the device of its parameters.

    Raises:
        ValueError: the collator packs pairs (``positions`` / ``doc_ids`` / ``branch_ids``)
            and the model's forward takes no such input (``sequence_logps`` names it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: list[Tensor] = []
    counts: list[Tensor] = []
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = list(pairs[start : start + batch_size])
            batch = {
                k: v.to(device) if isinstance(v, Tensor) else v for k, v in collate(chunk).items()
            }
            seq, n_tokens, _ = sequence_logps(model, batch)  # (2b,): chosen, then rejected
            n = len(chunk)
            sums.append(torch.stack([seq[:n], seq[n:]], dim=1).float().cpu())  # (b, 2)
            counts.append(torch.stack([n_tokens[:n], n_tokens[n:]], dim=1).float().cpu())
    finally:
        model.train(was_training)
    if not sums:
        return torch.zeros(0, 2), torch.zeros(0, 2)
    return torch.cat(sums), torch.cat(counts)


__all__ = ["completion_logps"]
