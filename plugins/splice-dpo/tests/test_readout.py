"""``completion_logps`` reads each sequence from the training layouts, not per row.

float32 throughout (the tiny models are built in float32 and called directly), so the
layouts agree with the padded readout and with each sequence run alone to float rounding.
"""

from __future__ import annotations

import pytest
import torch
from splice_dpo.data import PreferenceCollator, PreferenceExample
from splice_dpo.readout import completion_logps
from torch import nn

#: odd lengths: a one-token prompt (bos alone), completions of unequal length, a
#: one-token completion (eos alone) on either side, a one-token prompt with a one-token
#: completion, completions that begin alike, and a plain arithmetic pair
ODD_PAIRS = [
    PreferenceExample("", "15", "1234567"),
    PreferenceExample("12+3=", "", "16"),
    PreferenceExample("7", "8", ""),
    PreferenceExample("", "", "9"),
    PreferenceExample("9+9=", "18", "1800"),
    PreferenceExample("40+2=", "42", "43"),
]


def _alone(model: nn.Module, tok, prompt: str, completion: str) -> tuple[float, int]:
    """The summed log-prob of ``completion + eos`` after ``bos + prompt``, in a row alone."""
    p = tok.encode(prompt, bos=True)
    c = tok.encode(completion, eos=True)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].double(), -1)  # (T, V)
    return float(sum(lp[i - 1, ids[0, i]] for i in range(len(p), len(p) + len(c)))), len(c)


@pytest.mark.parametrize(("layout", "row_len"), [("shared_prompt", None), ("shared_prompt", 20),
                                                 ("packed", None)])  # fmt: skip
def test_packed_readout_equals_the_padded_one_on_odd_lengths(make_model, tok, layout, row_len):
    model = make_model(3, n_layers=2)
    packed = PreferenceCollator(tok, max_len=32, layout=layout, row_len=row_len)
    batch = packed(ODD_PAIRS)
    assert batch["input_ids"].shape[0] < 2 * len(ODD_PAIRS)  # rows hold several sequences
    padded = PreferenceCollator(tok, max_len=32, layout="padded")
    got_sums, got_counts = completion_logps(model, ODD_PAIRS, packed, batch_size=4)
    want_sums, want_counts = completion_logps(model, ODD_PAIRS, padded, batch_size=4)
    assert got_sums.shape == got_counts.shape == (len(ODD_PAIRS), 2)
    torch.testing.assert_close(got_counts, want_counts, atol=0, rtol=0)
    torch.testing.assert_close(got_sums, want_sums, atol=1e-5, rtol=1e-6)
    # and each sequence run alone in its own row (what the sums mean)
    for i, pair in enumerate(ODD_PAIRS):
        for side, completion in enumerate((pair.chosen, pair.rejected)):
            total, n = _alone(model, tok, pair.prompt, completion)
            assert got_counts[i, side] == n
            assert got_sums[i, side].item() == pytest.approx(total, abs=1e-5)
    assert (got_sums < 0).all()


def test_readout_restores_the_mode_and_does_not_depend_on_batching(make_model, tok):
    model = make_model(4).train()
    collate = PreferenceCollator(tok, max_len=32)  # the default layout: shared_prompt
    one, _ = completion_logps(model, ODD_PAIRS, collate, batch_size=1)
    all_, _ = completion_logps(model, ODD_PAIRS, collate, batch_size=len(ODD_PAIRS))
    torch.testing.assert_close(one, all_, atol=1e-5, rtol=1e-6)
    assert model.training
    empty_sums, empty_counts = completion_logps(model, [], collate)
    assert empty_sums.shape == empty_counts.shape == (0, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        completion_logps(model, ODD_PAIRS, collate, batch_size=0)


class _NoPacking(nn.Module):
    """A model whose forward takes no packing inputs (as many third-party wrappers do)."""

    lm_head = property(lambda self: self.inner.lm_head)

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None, return_logits=True):  # type: ignore[no-untyped-def]
        return self.inner(input_ids, attention_mask=attention_mask, return_logits=return_logits)


def test_a_model_without_packing_inputs_is_named(make_model, tok):
    model = _NoPacking(make_model(5))
    shared = PreferenceCollator(tok, max_len=32, layout="shared_prompt")
    with pytest.raises(ValueError, match=r"_NoPacking.forward takes no \['positions', 'doc_ids', "
                       r"'branch_ids'\]"):  # fmt: skip
        completion_logps(model, ODD_PAIRS, shared)
    padded = PreferenceCollator(tok, max_len=32, layout="padded")
    sums, _ = completion_logps(model, ODD_PAIRS, padded)  # the padded layout still reads
    assert sums.shape == (len(ODD_PAIRS), 2)
