"""Packed preference layouts: the same loss, metrics and gradients as the padded one.

float32 throughout (the tiny models are built in float32 and called directly, so no
``precision: auto`` is resolved), so the layouts must agree to float rounding.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from splice.data.collate import IGNORE_INDEX, TokenizedExample
from splice.rl.reference import ReferenceModel
from splice_dpo.configs import DPOConfig
from splice_dpo.data import PreferenceCollator, PreferenceExample
from splice_dpo.objective import DPOObjective
from splice_dpo.packing import pack_pairs, shared_start
from splice_dpo.precompute import precompute_reference_logps

PACKED = [("packed", None), ("shared_prompt", None), ("shared_prompt", 24)]


def _pairs(make_pairs) -> list[PreferenceExample]:
    """Arithmetic pairs plus pairs whose completions begin with the same tokens (the shared
    prefix must stop before them) and one with an empty completion."""
    extra = [
        PreferenceExample("12+3=", "15", "16"),
        PreferenceExample("9+9=", "18", "1800"),
        PreferenceExample("1+1=", "", "2"),
    ]
    return make_pairs(5) + extra


def _loss_and_grads(model, reference, batch, loss: str):
    obj = DPOObjective(DPOConfig(loss={"type": loss, "beta": 0.5}))
    obj.reference = reference
    model.zero_grad()
    out = obj.loss(model, batch)
    out.loss.backward()
    return out, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("layout", "row_len"), PACKED)
@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "orpo"])
def test_packed_layouts_give_the_padded_loss_and_gradients(
    layout, row_len, loss, make_model, make_pairs, tok
) -> None:
    model = make_model(0, n_layers=2)
    reference = ReferenceModel(model, mode="copy")
    with torch.no_grad():  # move the policy off the reference: log-ratios are not all 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pairs = _pairs(make_pairs)
    padded = PreferenceCollator(tok, max_len=32, layout="padded")(pairs)
    packed = PreferenceCollator(tok, max_len=32, layout=layout, row_len=row_len)(pairs)
    assert packed["input_ids"].numel() <= padded["input_ids"].numel()
    want, want_grads = _loss_and_grads(model, reference, padded, loss)
    got, got_grads = _loss_and_grads(model, reference, packed, loss)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-6, rtol=1e-5)
    assert abs(want.loss.item() - 0.6931) > 1e-3  # a loss that depends on the weights
    assert got.metrics.keys() == want.metrics.keys()
    for key, value in want.metrics.items():
        assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-4)


def test_shared_prompt_runs_the_prompt_once(tok) -> None:
    """One pair: bos+prompt once (but its last token), then each completion headed by it."""
    pair = PreferenceExample("12+3=", "15", "7")
    b = PreferenceCollator(tok, max_len=32, layout="shared_prompt")([pair])
    prompt = tok.encode("12+3=", bos=True)
    chosen, rejected = tok.encode("15", eos=True), tok.encode("7", eos=True)
    p = len(prompt)
    want_ids = [*prompt[:-1], prompt[-1], *chosen, prompt[-1], *rejected]
    assert b["input_ids"].tolist() == [want_ids]
    head = list(range(p - 1))
    assert b["positions"].tolist() == [
        head + list(range(p - 1, p + len(chosen))) + list(range(p - 1, p + len(rejected)))
    ]
    assert b["branch_ids"].tolist() == [
        [0] * (p - 1) + [1] * (len(chosen) + 1) + [2] * (len(rejected) + 1)
    ]
    want_seq = [-1] * p + [0] * len(chosen) + [-1] + [1] * len(rejected)
    assert b["sequence_ids"].tolist() == [want_seq]
    assert b["score_mask"].tolist() == [[s >= 0 for s in want_seq]]
    labels = [IGNORE_INDEX] * p + chosen + [IGNORE_INDEX] * (len(rejected) + 1)
    assert b["labels"].tolist() == [labels]  # SFT on the batch trains the chosen side only
    assert int(b["n_pairs"]) == 1


def _tokens(ids: list[int], n_prompt: int) -> TokenizedExample:
    return TokenizedExample(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:])


def test_shared_start_stops_before_the_first_scored_token() -> None:
    # prompts agree: the prompt's last token (index 2) heads the branches
    assert shared_start(_tokens([1, 5, 6, 7, 2], 3), _tokens([1, 5, 6, 8, 2], 3)) == 2
    # completions that begin alike share no completion token: still index 2
    assert shared_start(_tokens([1, 5, 6, 7, 7, 2], 3), _tokens([1, 5, 6, 7, 9, 2], 3)) == 2
    # a tokenizer that merged the boundary differently: the last common token heads them
    assert shared_start(_tokens([1, 5, 9, 7, 2], 3), _tokens([1, 5, 6, 7, 2], 3)) == 1
    # nothing in common, or a one-token prompt: no shared prefix
    assert shared_start(_tokens([4, 7, 2], 1), _tokens([5, 7, 2], 1)) == 0
    assert shared_start(_tokens([1, 7, 2], 1), _tokens([1, 8, 2], 1)) == 0


def test_pairs_share_rows_without_seeing_each_other(make_model, make_pairs, tok) -> None:
    """Packed rows hold several documents; each sequence's log-probs equal its own row's."""
    model = make_model(1, n_layers=2)
    pairs = _pairs(make_pairs)
    packed = PreferenceCollator(tok, max_len=32, layout="shared_prompt", row_len=64)(pairs)
    assert packed["input_ids"].shape[0] < len(pairs)  # rows hold several pairs
    assert int(packed["doc_ids"].max()) >= 2
    padded = PreferenceCollator(tok, max_len=32, layout="padded")(pairs)
    a = precompute_reference_logps(model, pairs, lambda x: padded, batch_size=len(pairs))
    b = precompute_reference_logps(model, pairs, lambda x: packed, batch_size=len(pairs))
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-6)


def test_precomputed_reference_attaches_in_every_layout(make_model, make_pairs, tok) -> None:
    model = make_model(2)
    pairs = _pairs(make_pairs)
    tables = {
        layout: precompute_reference_logps(
            model, pairs, PreferenceCollator(tok, max_len=32, layout=layout), batch_size=3
        )
        for layout in ("padded", "packed", "shared_prompt")
    }
    for layout in ("packed", "shared_prompt"):
        torch.testing.assert_close(tables[layout], tables["padded"], atol=1e-5, rtol=1e-6)
    with_ref = [
        dataclasses.replace(p, ref_chosen=float(t[0]), ref_rejected=float(t[1]))
        for p, t in zip(pairs, tables["padded"])
    ]
    batch = PreferenceCollator(tok, max_len=32, layout="shared_prompt")(with_ref)
    assert batch["ref_chosen_logps"].shape == (len(pairs),)


def test_bad_layouts_are_named(tok) -> None:
    with pytest.raises(ValueError, match="layout must be one of"):
        PreferenceCollator(tok, max_len=32, layout="tree")  # type: ignore[arg-type]
    toks = [_tokens([1, 5, 6, 7, 2], 3)]
    with pytest.raises(ValueError, match="row_len=3 is shorter than a shared_prompt document"):
        pack_pairs(toks, toks, layout="shared_prompt", pad_id=0, row_len=3)
    with pytest.raises(ValueError, match="1 chosen sequences for 0 rejected"):
        pack_pairs(toks, [], layout="packed", pad_id=0)


def test_a_model_without_packing_inputs_is_told_to_use_the_padded_layout(
    make_model, make_pairs, tok
) -> None:
    class PaddedOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = make_model(0)
            self.lm_head = self.inner.lm_head

        def forward(self, input_ids, *, attention_mask=None, return_logits=True):  # type: ignore[no-untyped-def]
            return self.inner(input_ids, attention_mask=attention_mask, return_logits=return_logits)

    model = PaddedOnly()
    obj = DPOObjective(DPOConfig(loss="simpo"))
    packed = PreferenceCollator(tok, max_len=32)(make_pairs(2))  # the default layout
    with pytest.raises(
        ValueError, match=r"PaddedOnly.forward takes no \['positions', 'doc_ids', 'branch_ids'\]"
    ):
        obj.loss(model, packed)
    obj.loss(model, PreferenceCollator(tok, max_len=32, layout="padded")(make_pairs(2)))


def test_default_rows_are_the_cheapest_plan_and_long_documents_get_a_row_each() -> None:
    from splice_dpo.packing import MAX_DEFAULT_ROW_LEN, cheapest_plan, default_row_len

    assert default_row_len(100) == 200
    assert default_row_len(400) == MAX_DEFAULT_ROW_LEN == 512
    assert default_row_len(3000) == 3000  # a long document is never split
    # 100 | 60 + 40 fills two rows of 100 exactly; twice the longest (200) would leave a
    # 200-wide row beside a 100-wide one: 400 slots for 200 tokens
    assert sorted(map(sorted, cheapest_plan([100, 60, 40]))) == [[0], [1, 2]]
    # equal documents: as many slots one or two per row, and less attention one per row
    assert cheapest_plan([60, 60, 60, 60]) == [[0], [1], [2], [3]]
    # many short ones share rows (fewer, fuller rows than one each)
    assert len(cheapest_plan([30, 10, 10, 10, 20, 20])) < 6

    def pairs(prompt: int, completion: int, n: int) -> tuple[list, list]:
        ids = list(range(3, 3 + prompt + completion))
        return [_tokens(ids, prompt)] * n, [_tokens(ids[:-1], prompt)] * n

    long = pack_pairs(*pairs(150, 150, 4), layout="shared_prompt", pad_id=0)  # 450-token docs
    assert long["input_ids"].shape == (4, 450)  # one per row: no (R, L, L) mask of 900
    assert int(long["attention_mask"].sum()) == 4 * 450
