"""Collators: turn a list of ``Example`` into padded or packed SFT tensors.

Every sequence is ``bos + prompt + completion + eos``. ``labels`` are aligned with
``input_ids`` (``labels[t]`` is the target *for the token at t*, not for t+1); the
loss does the next-token shift. Labels are ``-100`` on ``bos``, the prompt and
padding, so only completion tokens and the closing ``eos`` are learned.

Truncation: a sequence longer than ``max_len`` is cut on the right (the prompt is
kept, the completion's tail and ``eos`` are dropped) with a ``UserWarning`` naming
the example and both lengths, or raises ``ValueError`` with ``overflow="error"``.
A cut that leaves no completion token means the example trains nothing; the
warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from splice.data.examples import Example

IGNORE_INDEX = -100

Overflow = Literal["truncate", "error"]


class Tokenizer(Protocol):
    """The tokenizer protocol collators need (CharTokenizer and the HF wrapper have it)."""

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...  # None: no BOS token, ``encode(bos=True)`` adds nothing

    @property
    def eos_id(self) -> int | None: ...  # None: no EOS token (Hugging Face tokenizers may lack one)


@dataclass(frozen=True)
class TokenizedExample:
    """One example as ids: ``input_ids`` and aligned ``labels`` (``-100`` = no loss)."""

    input_ids: list[int]
    labels: list[int]


def tokenize_example(
    tokenizer: Tokenizer,
    example: Example,
    *,
    max_len: int,
    overflow: Overflow = "truncate",
    index: int = 0,
) -> TokenizedExample:
    """Encode ``bos + prompt + completion + eos`` with completion-only labels.

    Args:
        max_len: longest allowed sequence; longer ones are truncated or rejected.
        overflow: ``"truncate"`` (keep the first ``max_len`` tokens, warn) or ``"error"``.
        index: the example's position in its batch, only used in messages.

    Raises:
        ValueError: the sequence is longer than ``max_len`` and ``overflow="error"``.
    """
    prompt = tokenizer.encode(example.prompt, bos=True)
    completion = tokenizer.encode(example.completion, eos=True)
    ids = prompt + completion
    labels = [IGNORE_INDEX] * len(prompt) + completion
    if len(ids) > max_len:
        msg = (
            f"example {index} is {len(ids)} tokens (prompt {len(prompt)}, completion+eos "
            f"{len(completion)}), longer than max_len={max_len}"
        )
        if overflow == "error":
            raise ValueError(msg + "; raise max_len or use overflow='truncate'")
        if overflow != "truncate":
            raise ValueError(f"overflow must be 'truncate' or 'error', got {overflow!r}")
        kept = max(0, max_len - len(prompt))
        tail = "" if kept else "; no completion token survives, so it trains nothing"
        warnings.warn(f"{msg}; truncated on the right to {max_len} tokens{tail}", stacklevel=3)
        ids, labels = ids[:max_len], labels[:max_len]
    return TokenizedExample(ids, labels)


def _check_max_len(max_len: int) -> None:
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 (bos plus one token), got {max_len}")


class _Collator:
    """Shared set-up of the SFT collators: tokenizer, length limit, overflow policy."""

    def __init__(
        self, tokenizer: Tokenizer, *, max_len: int, overflow: Overflow = "truncate"
    ) -> None:
        _check_max_len(max_len)
        self.tokenizer, self.max_len, self.overflow = tokenizer, max_len, overflow

    def _tokenize(self, examples: Sequence[Example]) -> list[TokenizedExample]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        return [
            tokenize_example(
                self.tokenizer, ex, max_len=self.max_len, overflow=self.overflow, index=i
            )
            for i, ex in enumerate(examples)
        ]


class SFTCollator(_Collator):
    """Right-padded SFT batches: one example per row, padded to the longest row.

    ``__call__(examples) -> dict`` with (``B`` examples, ``T`` longest length):
        ``input_ids`` (B, T) long, padded with ``tokenizer.pad_id``;
        ``labels`` (B, T) long, ``-100`` on bos, prompt and padding;
        ``attention_mask`` (B, T) long, 1 for real tokens, 0 for padding.

    Args:
        tokenizer: anything with the tokenizer protocol.
        max_len: longest sequence; see the module docstring for truncation.
        overflow: ``"truncate"`` (default, warns) or ``"error"``.
    """

    def __call__(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        rows = self._tokenize(examples)
        t = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((len(rows), t), self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), t), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.input_ids)
            input_ids[i, :n] = torch.tensor(r.input_ids)
            labels[i, :n] = torch.tensor(r.labels)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def pack_first_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Assign items to rows: each item goes into the first row with room (order-stable).

    Returns the item indices of each row, in the order they were placed. Deterministic:
    the same lengths always give the same packing.
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for i, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > row capacity {capacity}")
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(capacity - n)
    return rows


class PackedSFTCollator(_Collator):
    """Pack whole examples into rows of exactly ``max_len`` tokens (first-fit, order-stable).

    Packing removes most padding: many short examples share one row, and attention
    is kept inside each document by ``doc_ids``, so the result is the same as
    running every example alone (``tests/test_collate_packing.py`` checks the loss).

    ``__call__(examples) -> dict`` with ``R`` rows of ``T = max_len``:
        ``input_ids`` (R, T) long; ``labels`` (R, T) long (``-100`` on bos, prompts and
        padding, so no label ever asks a document's last token to predict the next
        document's first token); ``attention_mask`` (R, T) long (0 on padding);
        ``positions`` (R, T) long, restarting at 0 for each document (0 on padding);
        ``doc_ids`` (R, T) long, ``0, 1, ...`` per document within a row; trailing
        padding gets its own id (one past the row's last document), so no real token
        attends to it and it attends only to itself.

    Args:
        tokenizer: anything with the tokenizer protocol.
        max_len: row length; also the longest allowed example (see truncation above).
        overflow: ``"truncate"`` (default, warns) or ``"error"``.
    """

    def __call__(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        docs = self._tokenize(examples)
        plan = pack_first_fit([len(d.input_ids) for d in docs], self.max_len)
        shape = (len(plan), self.max_len)
        input_ids = torch.full(shape, self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        positions = torch.zeros(shape, dtype=torch.long)
        doc_ids = torch.zeros(shape, dtype=torch.long)
        for r, members in enumerate(plan):
            start = 0
            for d, i in enumerate(members):
                n = len(docs[i].input_ids)
                input_ids[r, start : start + n] = torch.tensor(docs[i].input_ids)
                labels[r, start : start + n] = torch.tensor(docs[i].labels)
                attention_mask[r, start : start + n] = 1
                positions[r, start : start + n] = torch.arange(n)
                doc_ids[r, start : start + n] = d
                start += n
            doc_ids[r, start:] = len(members)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "positions": positions,
            "doc_ids": doc_ids,
        }


__all__ = [
    "IGNORE_INDEX",
    "PackedSFTCollator",
    "SFTCollator",
    "TokenizedExample",
    "pack_first_fit",
    "tokenize_example",
]
