"""Preference data: pairs (DPO family) and unpaired examples (KTO), read from JSONL and collated.

Pair lines: ``{"prompt": "...", "chosen": "...", "rejected": "...", "answer"?: "..."}``, or
chat ``{"chosen": [messages], "rejected": [messages]}`` whose messages agree up to the
final assistant message (the prompt is rendered from the shared messages with
``splice.data.chat``). Unpaired lines: ``{"prompt", "completion", "label": bool}`` or
``{"messages": [...], "label": bool}``. A malformed line raises ``ValueError`` starting
with ``"<file>:<line>:"``.

``PreferenceCollator`` puts a batch's ``B`` chosen sequences and then its ``B`` rejected
ones in one ``(2B, T)`` tensor, so both sides go through one forward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from splice.data.chat import SIMPLE_TEMPLATE, ChatTemplate
from splice.data.collate import (
    IGNORE_INDEX,
    Overflow,
    TokenizedExample,
    Tokenizer,
    tokenize_example,
)
from splice.data.examples import Example
from splice.data.jsonl import parse_jsonl_lines
from torch import Tensor

from splice_dpo.packing import LAYOUTS, Layout, pack_pairs


@dataclass(frozen=True)
class PreferenceExample:
    """One preference pair.

    Attributes:
        prompt / chosen / rejected: the texts (completions exclude the prompt).
        answer: a verifiable answer, if any (exact-match evaluation compares to it).
        ref_chosen / ref_rejected: precomputed reference log-probs (summed over the
            completion), set by ``precompute_reference_logps``; None until then.
    """

    prompt: str
    chosen: str
    rejected: str
    answer: str = ""
    ref_chosen: float | None = None
    ref_rejected: float | None = None

    @property
    def completion(self) -> str:
        """The preferred completion (what exact-match evaluation falls back to)."""
        return self.chosen


@dataclass(frozen=True)
class UnpairedExample:
    """One KTO example: a completion labelled desirable (True) or undesirable (False)."""

    prompt: str
    completion: str
    label: bool
    answer: str = ""


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in obj:
        raise ValueError(f"missing field {key!r} (fields present: {sorted(obj)})")
    value = obj[key]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"field {key!r} must be a {want}, got {type(value).__name__}")
    return value


def _answer(obj: dict[str, Any]) -> str:
    return str(_field(obj, "answer")) if "answer" in obj else ""


def preference_example(
    obj: dict[str, Any], template: ChatTemplate = SIMPLE_TEMPLATE
) -> PreferenceExample:
    """One JSON object -> ``PreferenceExample`` (either line format)."""
    chosen_raw = obj.get("chosen")
    if isinstance(chosen_raw, list):  # chat: two conversations sharing all but the last turn
        chosen_msgs = _field(obj, "chosen", list)
        rejected_msgs = _field(obj, "rejected", list)
        prompt, chosen = template.prompt_completion(chosen_msgs)
        prompt_r, rejected = template.prompt_completion(rejected_msgs)
        if prompt != prompt_r:
            raise ValueError(
                "'chosen' and 'rejected' conversations must share every message but the last"
            )
        if "prompt" in obj:
            raise ValueError("a chat pair carries its prompt in the messages; drop 'prompt'")
        return PreferenceExample(prompt, chosen, rejected, _answer(obj))
    return PreferenceExample(
        _field(obj, "prompt"), _field(obj, "chosen"), _field(obj, "rejected"), _answer(obj)
    )


def unpaired_example(
    obj: dict[str, Any], template: ChatTemplate = SIMPLE_TEMPLATE
) -> UnpairedExample:
    """One JSON object -> ``UnpairedExample``."""
    label = _field(obj, "label", bool)
    if "messages" in obj:
        prompt, completion = template.prompt_completion(_field(obj, "messages", list))
    else:
        prompt, completion = _field(obj, "prompt"), _field(obj, "completion")
    return UnpairedExample(prompt, completion, label, _answer(obj))


def read_preference_jsonl(path: str | Path) -> list[PreferenceExample]:
    """Every pair of a preference JSONL file; a bad line (not UTF-8, not JSON, a missing
    field) names the file and line, an empty file names the file."""
    return [ex for _, ex in parse_jsonl_lines(path, preference_example)]


def read_unpaired_jsonl(path: str | Path) -> list[UnpairedExample]:
    """Every example of an unpaired (KTO) JSONL file; errors as ``read_preference_jsonl``."""
    return [ex for _, ex in parse_jsonl_lines(path, unpaired_example)]


def write_preference_jsonl(path: str | Path, pairs: Sequence[PreferenceExample]) -> None:
    """Write pairs as prompt/chosen/rejected(/answer) lines (reference values are not stored)."""
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            row = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            if p.answer:
                row["answer"] = p.answer
            f.write(json.dumps(row) + "\n")


def _pad(rows: Sequence[list[int]], fill: int, t: int) -> Tensor:
    out = torch.full((len(rows), t), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _tokenize(
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_len: int,
    overflow: Overflow,
) -> list[TokenizedExample]:
    return [
        tokenize_example(tokenizer, Example(p, c), max_len=max_len, overflow=overflow, index=i)
        for i, (p, c) in enumerate(zip(prompts, completions))
    ]


def _padded(toks: Sequence[TokenizedExample], pad_id: int) -> dict[str, Tensor]:
    """One sequence per row, right-padded: ids, labels, attention mask."""
    t = max(len(x.input_ids) for x in toks)
    ids = _pad([x.input_ids for x in toks], pad_id, t)  # (N, T)
    labels = _pad([x.labels for x in toks], IGNORE_INDEX, t)  # (N, T)
    attention = _pad([[1] * len(x.input_ids) for x in toks], 0, t)  # (N, T)
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


class PreferenceCollator:
    """``B`` pairs -> one batch holding the ``2B`` sequences: the chosen, then the rejected.

    ``layout="padded"``: one sequence per row, right-padded (``T`` the longest):
        ``input_ids`` (2B, T) long; ``attention_mask`` (2B, T) long;
        ``score_mask`` (2B, T) bool, True on completion tokens (and eos), the tokens whose
        log-probs are scored; ``labels`` (2B, T) long, the chosen completions' tokens and
        ``-100`` elsewhere (rejected rows included), so the SFT objective run on this batch
        trains on the chosen side.
    ``layout="packed"`` / ``"shared_prompt"``: the same sequences packed into ``R`` rows
        without padding (the latter running each prompt once for both completions), with
        ``positions``, ``doc_ids`` (and ``branch_ids``) for the model and ``sequence_ids``
        naming the sequence of each scored token (``splice_dpo.packing``).
    Every layout adds ``n_pairs`` (scalar long) ``B`` and, when every pair carries
    precomputed reference log-probs, ``ref_chosen_logps`` / ``ref_rejected_logps`` (B,)
    float32. The layouts give the same log-probs up to float rounding.

    Args:
        tokenizer: anything with the tokenizer protocol.
        max_len: longest sequence (prompt + completion); see ``splice.data.collate``.
        overflow: ``"truncate"`` (default, warns) or ``"error"``.
        layout: ``"shared_prompt"`` (default), ``"packed"`` or ``"padded"`` (see above;
            ``"padded"`` for a model whose forward takes no ``positions`` / ``doc_ids`` /
            ``branch_ids``).
        row_len: packed row capacity; None = the cheapest packing over capacities from the
            batch's longest packed document to twice it, capped at 512 tokens unless that
            document is longer (``splice_dpo.packing.cheapest_plan``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        max_len: int,
        overflow: Overflow = "truncate",
        layout: Layout = "shared_prompt",
        row_len: int | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"PreferenceCollator layout must be one of {LAYOUTS}, got {layout!r}")
        self.tokenizer, self.max_len, self.overflow = tokenizer, max_len, overflow
        self.layout, self.row_len = layout, row_len

    def __call__(self, pairs: Sequence[PreferenceExample]) -> dict[str, Tensor]:
        if not pairs:
            raise ValueError("cannot collate an empty list of preference pairs")
        prompts = [p.prompt for p in pairs] * 2
        completions = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        toks = _tokenize(self.tokenizer, prompts, completions, self.max_len, self.overflow)
        b = len(pairs)
        if self.layout == "padded":
            batch = _padded(toks, self.tokenizer.pad_id)
            batch["score_mask"] = batch["labels"] != IGNORE_INDEX
            batch["labels"][b:] = IGNORE_INDEX  # SFT on this batch = SFT on the chosen side
        else:
            batch = pack_pairs(
                toks[:b],
                toks[b:],
                layout=self.layout,
                pad_id=self.tokenizer.pad_id,
                row_len=self.row_len,
            )
        batch["n_pairs"] = torch.tensor(b)
        if all(p.ref_chosen is not None and p.ref_rejected is not None for p in pairs):
            batch["ref_chosen_logps"] = torch.tensor(
                [p.ref_chosen for p in pairs], dtype=torch.float32
            )
            batch["ref_rejected_logps"] = torch.tensor(
                [p.ref_rejected for p in pairs], dtype=torch.float32
            )
        return batch


class UnpairedCollator:
    """``N`` unpaired examples -> ``N`` rows, plus ``N`` mismatched rows for KTO's KL estimate.

    Returns ``input_ids``/``attention_mask``/``score_mask``/``labels`` (2N, T): rows ``0..N-1``
    are the examples, rows ``N..2N-1`` pair prompt ``i`` with completion ``i+1 (mod N)``
    (the reference point ``z``); ``labels`` cover the desirable examples only;
    ``desirable`` (N,) bool.
    """

    def __init__(
        self, tokenizer: Tokenizer, *, max_len: int, overflow: Overflow = "truncate"
    ) -> None:
        self.tokenizer, self.max_len, self.overflow = tokenizer, max_len, overflow

    def __call__(self, examples: Sequence[UnpairedExample]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        n = len(examples)
        prompts = [e.prompt for e in examples] * 2
        shifted = [examples[(i + 1) % n].completion for i in range(n)]
        completions = [e.completion for e in examples] + shifted
        toks = _tokenize(self.tokenizer, prompts, completions, self.max_len, self.overflow)
        batch = _padded(toks, self.tokenizer.pad_id)
        batch["score_mask"] = batch["labels"] != IGNORE_INDEX
        desirable = torch.tensor([e.label for e in examples], dtype=torch.bool)
        batch["labels"][n:] = IGNORE_INDEX
        batch["labels"][:n][~desirable] = IGNORE_INDEX
        batch["desirable"] = desirable
        return batch


__all__ = [
    "PreferenceCollator",
    "PreferenceExample",
    "UnpairedCollator",
    "UnpairedExample",
    "preference_example",
    "read_preference_jsonl",
    "read_unpaired_jsonl",
    "unpaired_example",
    "write_preference_jsonl",
]
