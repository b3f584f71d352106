"""Collator for encoder-decoder training: the prompt is the source, the completion the target.

The source goes to the encoder as it is (no bos/eos: the padding mask already tells
the encoder where it ends). The target goes to the decoder as ``bos + completion + eos``
with labels aligned to ``input_ids`` (``-100`` on bos and padding), exactly as in
``splice.data.collate``, so ``SFTObjective`` trains an ``EncoderDecoderLM`` unchanged:
it forwards ``encoder_input_ids`` / ``encoder_attention_mask`` to the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from splice.data.collate import IGNORE_INDEX, Overflow, Tokenizer, tokenize_example
from splice.data.examples import Example


def _pad_right(rows: Sequence[Sequence[int]], value: int) -> tuple[Tensor, Tensor]:
    """``(ids (B, L), mask (B, L))``: rows padded on the right with ``value``, mask 1 on real ids."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class Seq2SeqCollator:
    """Right-padded encoder-decoder batches.

    ``__call__(examples) -> dict`` with ``S`` the longest source and ``T`` the longest target:
        ``encoder_input_ids`` (B, S) long: the prompt's tokens, padded with ``pad_id``;
        ``encoder_attention_mask`` (B, S) long: 1 real, 0 pad;
        ``input_ids`` (B, T) long: ``bos + completion + eos``, padded;
        ``labels`` (B, T) long: aligned with ``input_ids``, ``-100`` on bos and padding;
        ``attention_mask`` (B, T) long: 1 real, 0 pad.

    Args:
        tokenizer: anything with the tokenizer protocol.
        max_source_len: longest source; longer ones are cut on the right (warning) or rejected.
        max_target_len: longest ``bos + completion + eos``; same policy.
        overflow: ``"truncate"`` (warn) or ``"error"``.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_source_len: int,
        max_target_len: int,
        overflow: Overflow = "truncate",
    ) -> None:
        if max_source_len < 1:
            raise ValueError(f"max_source_len must be >= 1, got {max_source_len}")
        if max_target_len < 2:
            raise ValueError(
                f"max_target_len must be >= 2 (bos plus one token), got {max_target_len}"
            )
        if overflow not in ("truncate", "error"):
            raise ValueError(f"overflow must be 'truncate' or 'error', got {overflow!r}")
        self.tokenizer = tokenizer
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.overflow: Overflow = overflow

    def encode_source(self, text: str, *, index: int = 0) -> list[int]:
        """The encoder's ids of one source (truncated or rejected past ``max_source_len``)."""
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ValueError(f"example {index} has an empty source; the encoder needs >= 1 token")
        if len(ids) > self.max_source_len:
            msg = f"example {index} source is {len(ids)} tokens, longer than max_source_len={self.max_source_len}"
            if self.overflow == "error":
                raise ValueError(msg + "; raise max_source_len or use overflow='truncate'")
            warnings.warn(msg + "; truncated on the right", stacklevel=3)
            ids = ids[: self.max_source_len]
        return ids

    def sources(self, examples: Sequence[Example]) -> tuple[Tensor, Tensor]:
        """``(encoder_input_ids (B, S), encoder_attention_mask (B, S))`` of the prompts alone."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        rows = [self.encode_source(ex.prompt, index=i) for i, ex in enumerate(examples)]
        return _pad_right(rows, self.tokenizer.pad_id)

    def __call__(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        src_ids, src_mask = self.sources(examples)
        targets = [
            tokenize_example(
                self.tokenizer,
                Example("", ex.completion),
                max_len=self.max_target_len,
                overflow=self.overflow,
                index=i,
            )
            for i, ex in enumerate(examples)
        ]
        input_ids, attention_mask = _pad_right(
            [t.input_ids for t in targets], self.tokenizer.pad_id
        )
        labels, _ = _pad_right([t.labels for t in targets], IGNORE_INDEX)
        return {
            "encoder_input_ids": src_ids,
            "encoder_attention_mask": src_mask,
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
        }


__all__ = ["Seq2SeqCollator"]
