"""Collators: exact tensors, truncation, and packed loss == unpacked loss on a real model."""

from __future__ import annotations

import pytest
import torch
from splice.data.collate import IGNORE_INDEX, PackedSFTCollator, SFTCollator, pack_first_fit
from splice.data.examples import Example
from splice.data.tokenizer import CharTokenizer
from splice.models.build import build_model
from splice.objectives.configs import SFTConfig
from splice.objectives.sft import SFTObjective

TOK = CharTokenizer()
P = IGNORE_INDEX


def ids(text: str) -> list[int]:
    return TOK.encode(text)


def test_sft_collator_exact_tensors() -> None:
    batch = SFTCollator(TOK, max_len=16)([Example("1+2=", "3"), Example("9=", "10")])
    bos, eos, pad = TOK.bos_id, TOK.eos_id, TOK.pad_id
    row0 = [bos, *ids("1+2="), *ids("3"), eos]
    row1 = [bos, *ids("9="), *ids("10"), eos, pad]
    assert batch["input_ids"].tolist() == [row0, row1]
    assert batch["labels"].tolist() == [
        [P, P, P, P, P, *ids("3"), eos],
        [P, P, P, *ids("10"), eos, P],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1] * 6 + [0]]
    assert all(v.dtype == torch.long for v in batch.values())


def test_truncation_warns_and_keeps_prompt() -> None:
    with pytest.warns(UserWarning, match=r"example 1 is 9 tokens .* longer than max_len=6"):
        batch = SFTCollator(TOK, max_len=6)([Example("1=", "1"), Example("12+3=", "15")])
    # bos + "12+3=" (6 tokens) fills max_len: nothing of the completion is left.
    assert batch["input_ids"][1].tolist() == [TOK.bos_id, *ids("12+3=")]
    assert batch["labels"][1].tolist() == [P] * 6
    with pytest.warns(UserWarning, match="trains nothing"):
        SFTCollator(TOK, max_len=6)([Example("12+3=", "15")])
    with pytest.warns(UserWarning, match="truncated on the right to 7"):
        b = SFTCollator(TOK, max_len=7)([Example("12+3=", "15")])
    assert b["labels"][0].tolist() == [P] * 6 + ids("1")  # first completion char kept


def test_overflow_error_names_lengths() -> None:
    with pytest.raises(ValueError, match=r"example 0 is 9 tokens \(prompt 6, completion\+eos 3\)"):
        PackedSFTCollator(TOK, max_len=8, overflow="error")([Example("12+3=", "15")])
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        SFTCollator(TOK, max_len=1)


def test_first_fit_packing_plan() -> None:
    assert pack_first_fit([5, 4, 3, 2, 6], 8) == [[0, 2], [1, 3], [4]]
    with pytest.raises(ValueError, match="item 1 has length 9"):
        pack_first_fit([1, 9], 8)


def test_packed_collator_exact_tensors() -> None:
    # lengths 5, 7, 6: the third example goes back into the first row (first fit)
    exs = [Example("1=", "2"), Example("333=", "4"), Example("55=", "6")]
    batch = PackedSFTCollator(TOK, max_len=11)(exs)
    bos, eos, pad = TOK.bos_id, TOK.eos_id, TOK.pad_id
    assert batch["input_ids"].tolist() == [
        [bos, *ids("1=2"), eos, bos, *ids("55=6"), eos],
        [bos, *ids("333=4"), eos] + [pad] * 4,
    ]
    assert batch["labels"].tolist() == [
        [P, P, P, *ids("2"), eos, P, P, P, P, *ids("6"), eos],
        [P, P, P, P, P, *ids("4"), eos] + [P] * 4,
    ]
    assert batch["positions"].tolist() == [
        [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5],
        [0, 1, 2, 3, 4, 5, 6] + [0] * 4,
    ]
    assert batch["doc_ids"].tolist() == [[0] * 5 + [1] * 6, [0] * 7 + [1] * 4]
    assert batch["attention_mask"].tolist() == [[1] * 11, [1] * 7 + [0] * 4]


def tiny_model(vocab: int, *, tie: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": vocab,
            "d_model": 32,
            "n_layers": 2,
            "max_seq_len": 64,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
            "tie_embeddings": tie,
        }
    )


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.mha
def test_packed_loss_equals_unpacked_loss(chunk_size: int | None) -> None:
    """Same total loss whether examples run alone (padded) or packed together."""
    exs = [
        Example(f"{a}+{b}=", str(a + b)) for a, b in [(1, 2), (37, 45), (8, 90), (123, 4), (5, 5)]
    ]
    model = tiny_model(TOK.vocab_size).eval()
    objective = SFTObjective(SFTConfig(chunk_size=chunk_size))
    packed = PackedSFTCollator(TOK, max_len=24)(exs)
    assert packed["input_ids"].shape[0] < len(exs)  # several documents really share rows
    out = objective.loss(model, packed)
    single = SFTCollator(TOK, max_len=24)
    parts = [objective.loss(model, single([ex])) for ex in exs]
    total_tokens = sum(p.n_tokens for p in parts)
    assert out.n_tokens == total_tokens == sum(len(ex.completion) + 1 for ex in exs)
    unpacked = sum(p.loss.item() * p.n_tokens for p in parts) / total_tokens
    assert out.loss.item() == pytest.approx(unpacked, abs=1e-5)
    # and the padded (unpacked, batched) collator gives the same number too
    padded = objective.loss(model, single(exs))
    assert padded.loss.item() == pytest.approx(unpacked, abs=1e-5)


@pytest.mark.mha
def test_packing_without_doc_ids_would_differ() -> None:
    """Guard against a vacuous equality: dropping doc_ids/positions changes the loss."""
    exs = [Example("12+3=", "15"), Example("4+4=", "8"), Example("60+7=", "67")]
    model = tiny_model(TOK.vocab_size).eval()
    objective = SFTObjective()
    packed = PackedSFTCollator(TOK, max_len=32)(exs)
    leaky = {k: v for k, v in packed.items() if k not in ("doc_ids", "positions")}
    assert (
        abs(objective.loss(model, packed).loss.item() - objective.loss(model, leaky).loss.item())
        > 1e-4
    )
