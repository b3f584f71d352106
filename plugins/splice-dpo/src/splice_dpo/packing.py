"""Preference batches without padding: pairs packed into rows, optionally sharing the prompt.

The padded layout (``PreferenceCollator(layout="padded")``) puts each of a batch's ``2B``
sequences (``B`` chosen, then ``B`` rejected) in its own row, right-padded to the longest,
so the prompt of every pair runs twice and padding fills the rest of the short rows.
The two layouts here give the model the same computation on fewer token slots:

* ``"packed"``: the ``2B`` sequences are packed whole into rows (first fit, longest
  first); ``doc_ids`` keep attention inside each sequence and ``positions`` restart at 0.
* ``"shared_prompt"``: each pair becomes one document ``prefix | chosen | rejected``:
  the prompt's tokens but its last run once (branch 0), then each completion preceded by
  a copy of the prompt's last token (branches 1 and 2, positions continuing from the
  prefix). ``branch_ids`` let a branch attend to the prefix and to itself only, so every
  token sees exactly the keys (and positions) it sees in its own padded row, and the
  gradients of both completions flow back into the one copy of the prompt. The last
  prompt token is repeated because it predicts each completion's first token: with a
  copy at the head of each branch, the next-token shift of ``token_logprobs`` holds.

The shared prefix is the longest common prefix of the two token sequences that holds no
scored token, so it is right whatever the tokenizer does at the prompt boundary and when
both completions begin alike.

Every layout marks which sequence each scored token belongs to (``sequence_ids``), and
``sequence_sums`` adds the per-token log-probs back into the ``2B`` sequence sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from splice.data.collate import IGNORE_INDEX, TokenizedExample, pack_first_fit
from torch import Tensor

Layout = Literal["padded", "packed", "shared_prompt"]
LAYOUTS: tuple[str, ...] = ("padded", "packed", "shared_prompt")


@dataclass
class _Document:
    """One packed document's token columns (a sequence, or a pair sharing its prompt)."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    branch: list[int] = field(default_factory=list)
    sequence: list[int] = field(default_factory=list)  # -1 where the token is not scored
    labels: list[int] = field(default_factory=list)

    def add(
        self, tokens: TokenizedExample, start: int, *, branch: int, sequence: int, sft: bool
    ) -> None:
        """Append ``tokens[start:]`` at their own positions as ``branch`` of ``sequence``.

        A token is scored where its label is set and it is not its sequence's first token
        (nothing predicts position 0, as in the padded layout). ``sft``: keep the labels
        (the chosen side, which an SFT objective on the batch trains on)."""
        for i in range(start, len(tokens.input_ids)):
            scored = i > 0 and tokens.labels[i] != IGNORE_INDEX
            self.ids.append(tokens.input_ids[i])
            self.positions.append(i)
            self.branch.append(branch)
            self.sequence.append(sequence if scored else -1)
            self.labels.append(tokens.labels[i] if sft and i > 0 else IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.ids)


def shared_start(chosen: TokenizedExample, rejected: TokenizedExample) -> int:
    """Index of the token that heads both branches: the last token of the longest common
    prefix that holds no scored token (0: nothing is shared).

    The head must not be scored: in the packed row, the rejected branch's head follows the
    chosen branch's last token, so its own prediction would be wrong (and is not needed)."""
    common = 0
    for a, b in zip(chosen.input_ids, rejected.input_ids):
        if a != b:
            break
        common += 1
    scored = [
        i
        for tokens in (chosen, rejected)
        for i, label in enumerate(tokens.labels)
        if label != IGNORE_INDEX
    ]
    first_scored = min(scored, default=common)
    return max(min(common, first_scored) - 1, 0)


def _documents(
    chosen: Sequence[TokenizedExample], rejected: Sequence[TokenizedExample], layout: str
) -> list[_Document]:
    b = len(chosen)
    if layout == "packed":
        docs = []
        for seq, tokens in enumerate([*chosen, *rejected]):
            doc = _Document()
            doc.add(tokens, 0, branch=0, sequence=seq, sft=seq < b)
            docs.append(doc)
        return docs
    if layout != "shared_prompt":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    docs = []
    for i, (c, r) in enumerate(zip(chosen, rejected)):
        start = shared_start(c, r)
        doc = _Document()
        for j in range(start):  # the shared prefix: unscored, no labels
            doc.ids.append(c.input_ids[j])
            doc.positions.append(j)
            doc.branch.append(0)
            doc.sequence.append(-1)
            doc.labels.append(IGNORE_INDEX)
        doc.add(c, start, branch=1, sequence=i, sft=True)
        doc.add(r, start, branch=2, sequence=b + i, sft=False)
        docs.append(doc)
    return docs


#: Widest row the default packing makes from documents shorter than it (see ``pack_pairs``).
MAX_DEFAULT_ROW_LEN = 512
#: Row width at which a key's attention costs as much as a token slot's matmuls, in the
#: cost ``rows x width x (1 + width / ATTENTION_WIDTH)`` that ``cheapest_plan`` minimises:
#: attention took 13.5% of the float32 benchmark step (d=256, rows ~230 wide) against ~86%
#: for the per-token work, ~1/1,500 of a slot per key.
ATTENTION_WIDTH = 1500
#: Capacities ``cheapest_plan`` tries (evenly spaced): ~1 ms for a batch of 32 pairs.
PLAN_CANDIDATES = 32


def default_row_len(longest: int) -> int:
    """Widest row capacity the default packing considers for documents of at most
    ``longest`` tokens: twice that, capped at ``MAX_DEFAULT_ROW_LEN`` (never below
    ``longest``). Two 3,000-token documents in one row doubled the ``(R, 1, L, L)``
    attention mask against one per row; at ~116-token documents rows of 192-256 ran
    fastest and 512 lost the gain to attention."""
    return max(longest, min(2 * longest, MAX_DEFAULT_ROW_LEN))


def _first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows of document indices: longest first, each into the first row with room."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [
        [order[i] for i in row] for row in pack_first_fit([lengths[i] for i in order], capacity)
    ]


def cheapest_plan(lengths: Sequence[int]) -> list[list[int]]:
    """The default packing of documents of ``lengths`` tokens: first-fit decreasing at the
    capacity, among ``PLAN_CANDIDATES`` from the longest document to ``default_row_len``,
    whose ``R`` rows of width ``W`` (the fullest row) cost least, ``R W (1 + W /
    ATTENTION_WIDTH)``: the token slots the matmuls run over, plus attention's keys.

    One fixed capacity (twice the longest) left 16% of the slots empty at the benchmark's
    shapes (rows padded to the fullest); choosing per batch leaves ~4-5%, with less
    attention as well (fewer wide rows)."""
    longest = max(lengths)
    top = default_row_len(longest)
    step = max(1, (top - longest) // PLAN_CANDIDATES)
    best: tuple[float, list[list[int]]] | None = None
    for capacity in range(longest, top + 1, step):
        plan = _first_fit_decreasing(lengths, capacity)
        width = max(sum(lengths[i] for i in row) for row in plan)
        cost = len(plan) * width * (1 + width / ATTENTION_WIDTH)
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    return best[1]


def pack_pairs(
    chosen: Sequence[TokenizedExample],
    rejected: Sequence[TokenizedExample],
    *,
    layout: str,
    pad_id: int,
    row_len: int | None = None,
) -> dict[str, Tensor]:
    """Pack ``B`` tokenized pairs into rows; see the module docstring for the layouts.

    Args:
        chosen / rejected: each pair's ``bos + prompt + completion + eos`` tokens.
        layout: ``"packed"`` or ``"shared_prompt"``.
        pad_id: the id that fills each row's tail.
        row_len: row capacity in tokens; None = the cheapest of several capacities from
            the longest document to ``default_row_len`` of it (``cheapest_plan``).

    Returns ``R`` rows of ``L`` tokens (``L`` the fullest row):
        ``input_ids``, ``positions``, ``doc_ids`` (R, L) long (the tail of a row is a
        document of its own); ``branch_ids`` (R, L) long for ``"shared_prompt"``;
        ``attention_mask`` (R, L) long, 0 on the tail; ``labels`` (R, L) the chosen
        completions' tokens, -100 elsewhere; ``score_mask`` (R, L) bool, True on the
        scored tokens; ``sequence_ids`` (R, L) long, the sequence (chosen ``0..B-1``,
        rejected ``B..2B-1``) of each scored token, -1 elsewhere.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen sequences for {len(rejected)} rejected ones")
    docs = _documents(chosen, rejected, layout)
    longest = max(len(d) for d in docs)
    if row_len is not None and row_len < longest:
        raise ValueError(f"row_len={row_len} is shorter than a {layout} document of {longest}")
    lengths = [len(d) for d in docs]
    plan = cheapest_plan(lengths) if row_len is None else _first_fit_decreasing(lengths, row_len)
    width = max(sum(len(docs[i]) for i in row) for row in plan)
    shape = (len(plan), width)
    out = {
        "input_ids": torch.full(shape, pad_id, dtype=torch.long),
        "positions": torch.zeros(shape, dtype=torch.long),
        "doc_ids": torch.zeros(shape, dtype=torch.long),
        "branch_ids": torch.zeros(shape, dtype=torch.long),
        "attention_mask": torch.zeros(shape, dtype=torch.long),
        "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
        "sequence_ids": torch.full(shape, -1, dtype=torch.long),
    }
    for r, members in enumerate(plan):
        start = 0
        for d, i in enumerate(members):
            doc, end = docs[i], start + len(docs[i])
            out["input_ids"][r, start:end] = torch.tensor(doc.ids)
            out["positions"][r, start:end] = torch.tensor(doc.positions)
            out["doc_ids"][r, start:end] = d
            out["branch_ids"][r, start:end] = torch.tensor(doc.branch)
            out["attention_mask"][r, start:end] = 1
            out["labels"][r, start:end] = torch.tensor(doc.labels)
            out["sequence_ids"][r, start:end] = torch.tensor(doc.sequence)
            start = end
        out["doc_ids"][r, start:] = len(members)
    out["score_mask"] = out["sequence_ids"] >= 0
    if layout == "packed":
        del out["branch_ids"]
    return out


def sequence_sums(
    token_logps: Tensor, mask: Tensor, sequence_ids: Tensor | None, n_sequences: int
) -> tuple[Tensor, Tensor]:
    """``(summed log-probs (N,), token counts (N,) float32)`` of the ``N`` sequences.

    Args:
        token_logps: ``(R, L-1)`` log-probs of ``input_ids[:, 1:]`` (``TokenLogprobs``).
        mask: ``(R, L-1)`` bool, the scored tokens.
        sequence_ids: ``(R, L)`` the sequence of each token (packed layouts), or None for
            the padded layout (row ``i`` is sequence ``i``).
    """
    if sequence_ids is None:
        return token_logps.sum(-1), mask.sum(-1).float()
    seq = sequence_ids[:, 1:][mask]  # (n_scored,)
    sums = token_logps.new_zeros(n_sequences).index_add(0, seq, token_logps[mask])
    counts = torch.bincount(seq, minlength=n_sequences).float()
    return sums, counts


__all__ = [
    "ATTENTION_WIDTH",
    "LAYOUTS",
    "MAX_DEFAULT_ROW_LEN",
    "PLAN_CANDIDATES",
    "Layout",
    "cheapest_plan",
    "default_row_len",
    "pack_pairs",
    "sequence_sums",
    "shared_start",
]
