"""Boolean attention masks (True = may attend), shaped ``(B, 1, T, S)`` for SDPA."""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(t: int, s: int, *, device: torch.device | None = None) -> Tensor:
    """``(T, S)``: query i (at absolute index ``S - T + i``) sees keys ``<= S - T + i``."""
    q = torch.arange(s - t, s, device=device)[:, None]
    k = torch.arange(s, device=device)[None, :]
    return k <= q


def build_attention_mask(
    *,
    t: int,
    s: int,
    causal: bool,
    key_padding: Tensor | None = None,
    doc_ids: Tensor | None = None,
    branch_ids: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Combine causal, key-padding, same-document and same-branch masks into ``(B, 1, T, S)``.

    Args:
        t: number of query positions (the last ``t`` of the ``s`` key positions).
        s: number of key positions (cache + new).
        causal: forbid attending to later keys.
        key_padding: ``(B, S)`` bool, True for real tokens.
        doc_ids: ``(B, S)`` int document index per position (packing); tokens only
            attend within their document.
        branch_ids: ``(B, S)`` int branch per position (prefix sharing): 0 for a document's
            shared prefix, ``k > 0`` for its ``k``-th continuation; a token attends to keys
            of branch 0 and of its own branch only. Several completions of one prompt then
            share one copy of it: each sees the prompt and itself, never a sibling.

    A query row that would see no key at all (a padding query) is allowed to see
    itself, so softmax never divides by zero; its output is ignored anyway.
    """
    b = 1
    if key_padding is not None:
        b = key_padding.shape[0]
    elif doc_ids is not None:
        b = doc_ids.shape[0]
    elif branch_ids is not None:
        b = branch_ids.shape[0]
    # Built in place: one (B, 1, T, S) temporary at a time beside the mask (a 2048-token
    # packed batch's mask is tens of MiB; chained out-of-place ops held ~3.5x that).
    mask = torch.ones(b, 1, t, s, dtype=torch.bool, device=device)
    if causal:
        mask &= causal_mask(t, s, device=device)
    if key_padding is not None:
        mask &= key_padding[:, None, None, :].bool()
    if doc_ids is not None:
        mask &= doc_ids[:, None, s - t :, None] == doc_ids[:, None, None, :]
    if branch_ids is not None:
        key_branch = branch_ids[:, None, None, :]  # (B, 1, 1, S)
        same = branch_ids[:, None, s - t :, None] == key_branch  # (B, 1, T, S)
        mask &= same.logical_or_(key_branch == 0)
        del same
    empty = ~mask.any(dim=-1)  # (B, 1, T)
    # the query at absolute index S - T + i sits on diagonal S - T of the (T, S) block
    mask.diagonal(offset=s - t, dim1=-2, dim2=-1).logical_or_(empty)
    return mask
