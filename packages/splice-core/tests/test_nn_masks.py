"""splice.nn.masks.build_attention_mask against the rule it states, entry by entry."""

from __future__ import annotations

import itertools

import pytest
import torch
from splice.nn.masks import build_attention_mask


def _by_rule(t, s, causal, key_padding, doc_ids, branch_ids) -> torch.Tensor:  # type: ignore[no-untyped-def]
    b = next(x.shape[0] for x in (key_padding, doc_ids, branch_ids) if x is not None)
    out = torch.zeros(b, 1, t, s, dtype=torch.bool)
    for r, i, j in itertools.product(range(b), range(t), range(s)):
        q = s - t + i  # the query's absolute index
        ok = (not causal or j <= q) and (key_padding is None or bool(key_padding[r, j]))
        ok = ok and (doc_ids is None or int(doc_ids[r, q]) == int(doc_ids[r, j]))
        if branch_ids is not None:
            ok = ok and int(branch_ids[r, j]) in (0, int(branch_ids[r, q]))
        out[r, 0, i, j] = ok
    empty = ~out.any(-1)  # a query that sees nothing sees itself
    for r, i in zip(*torch.nonzero(empty[:, 0], as_tuple=True), strict=True):
        out[r, 0, i, s - t + i] = True
    return out


@pytest.mark.parametrize(("t", "s"), [(7, 7), (3, 7)])
@pytest.mark.parametrize("causal", [True, False])
def test_mask_follows_its_rule_with_padding_documents_and_branches(t, s, causal) -> None:
    key_padding = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    doc_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 1, 1]])
    branch_ids = torch.tensor([[0, 1, 1, 2, 0, 1, 0], [0, 0, 0, 1, 1, 2, 2]])
    for kp, docs, branches in itertools.product(
        (None, key_padding), (None, doc_ids), (None, branch_ids)
    ):
        if kp is None and docs is None and branches is None:
            continue
        got = build_attention_mask(
            t=t, s=s, causal=causal, key_padding=kp, doc_ids=docs, branch_ids=branches
        )
        want = _by_rule(t, s, causal, kp, docs, branches)
        assert torch.equal(got, want), (kp is not None, docs is not None, branches is not None)
    # a padded query row (left padding) sees nothing else: it sees itself
    got = build_attention_mask(t=s, s=s, causal=True, key_padding=key_padding[1:])
    assert got[0, 0, 0].tolist() == [True] + [False] * (s - 1)
