"""The dpo/kto objectives on a real tiny decoder: one forward, reference, metrics, training."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from splice.objectives.logprobs import token_logprobs
from splice.rl.reference import ReferenceModel
from splice_dpo.configs import DPOConfig, KTOConfig
from splice_dpo.data import PreferenceCollator, UnpairedCollator, UnpairedExample
from splice_dpo.kto import KTOObjective
from splice_dpo.losses import PreferenceLogps, sigmoid_loss
from splice_dpo.objective import DPOObjective
from splice_dpo.precompute import precompute_reference_logps

ALL_LOSSES = ["sigmoid", "cdpo", "robust", "hinge", "ipo", "simpo", "orpo"]


def _separate_sums(model: Any, batch: dict, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each side's summed log-probs from its own forward (what the concatenated one must equal)."""
    sides = []
    for rows in (slice(0, n), slice(n, 2 * n)):
        ids, mask = batch["input_ids"][rows], batch["score_mask"][rows]
        sides.append(
            token_logprobs(model, ids, mask, attention_mask=batch["attention_mask"][rows]).sum()
        )
    return sides[0], sides[1]


def test_one_forward_matches_two_and_reference(make_model, make_pairs, tok) -> None:
    model = make_model(0)
    batch = PreferenceCollator(tok, max_len=32, layout="padded")(make_pairs(6))
    obj = DPOObjective(DPOConfig(loss={"type": "sigmoid", "beta": 0.5}))
    obj.setup(model)  # the frozen copy is taken here, before the hook below
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    out = obj.loss(model, batch)
    handle.remove()
    # one policy forward over all 2B rows (the reference, a frozen copy, runs separately)
    assert calls == [(12, batch["input_ids"].shape[1])]
    assert not obj.reference.shares_weights
    chosen, rejected = _separate_sums(model, batch, 6)
    # at the start, the policy is the reference: every log-ratio is 0, the loss is log 2
    assert out.loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert out.metrics["rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    counts = batch["score_mask"][:, 1:].sum(1).float()
    assert out.metrics["logps/chosen"] == pytest.approx(
        float(chosen.sum() / counts[:6].sum()), rel=1e-5
    )
    assert out.metrics["logps/rejected"] == pytest.approx(
        float(rejected.sum() / counts[6:].sum()), rel=1e-5
    )
    assert out.n_tokens == 6


def test_loss_and_gradient_equal_the_written_out_formula(make_model, make_pairs, tok) -> None:
    """After the policy moves, the objective's loss/grad equal sigmoid_loss on separate forwards."""
    model = make_model(0)
    ref = ReferenceModel(model, mode="copy")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = PreferenceCollator(tok, max_len=32, layout="padded")(make_pairs(4))
    obj = DPOObjective(DPOConfig(loss={"type": "sigmoid", "beta": 0.5}))
    obj.reference = ref
    loss = obj.loss(model, batch).loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    c, r = _separate_sums(model, batch, 4)
    with ref.model() as m:
        rc, rr = _separate_sums(m, batch, 4)
    counts = batch["score_mask"][:, 1:].sum(1).float()
    lp = PreferenceLogps(c, r, counts[:4], counts[4:], rc, rr)
    expected = sigmoid_loss(lp, obj.config.loss).losses.mean()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
    for g, e in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-4)
    assert loss.item() != pytest.approx(0.6931, abs=1e-3)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_each_loss_learns_the_preference(loss: str, make_model, make_pairs, tok) -> None:
    torch.manual_seed(0)
    model = make_model(1)
    batch = PreferenceCollator(tok, max_len=32)(make_pairs(8))
    obj = DPOObjective(DPOConfig(loss={"type": loss}))
    obj.setup(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = obj.loss(model, batch)
    for _ in range(25):
        out = obj.loss(model, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = obj.loss(model, batch)
    assert last.loss.item() < first.loss.item()
    assert last.metrics["rewards/margin"] > first.metrics["rewards/margin"]
    assert last.metrics["rewards/accuracy"] == 1.0
    assert obj.needs_reference == (loss not in ("simpo", "orpo"))
    assert (obj.reference is None) == (loss in ("simpo", "orpo"))


def test_precomputed_reference_gives_the_same_loss(make_model, make_pairs, tok) -> None:
    model = make_model(2)
    pairs = make_pairs(6)
    collate = PreferenceCollator(tok, max_len=32)
    table = precompute_reference_logps(model, pairs, collate, batch_size=4)  # (N, 2)
    assert table.shape == (6, 2)
    live = DPOObjective(DPOConfig())
    live.setup(model)
    pre = DPOObjective(DPOConfig(precompute_reference=True))
    pre.setup(model)
    assert pre.reference is None  # no copy is kept when the values are precomputed
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    import dataclasses

    with_ref = [
        dataclasses.replace(p, ref_chosen=float(t[0]), ref_rejected=float(t[1]))
        for p, t in zip(pairs, table)
    ]
    a = live.loss(model, collate(pairs))
    b = pre.loss(model, collate(with_ref))
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="no 'ref_chosen_logps'"):
        pre.loss(model, collate(pairs))


def test_bad_batches_and_bad_loss_results(make_model, make_pairs, tok) -> None:
    model = make_model(0)
    obj = DPOObjective(DPOConfig())
    with pytest.raises(ValueError, match=r"missing \['score_mask', 'n_pairs'\]"):
        obj.loss(
            model,
            {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)},
        )
    batch = PreferenceCollator(tok, max_len=32)(make_pairs(2))
    obj.loss_fn = lambda logps, cfg: logps.chosen.sum()
    with pytest.raises(ValueError, match=r"returned shape \(\) for 2 pairs"):
        obj.loss(model, batch)


def test_kto_objective_trains(make_model, tok) -> None:
    ex = [
        UnpairedExample("1+2=", "3", True),
        UnpairedExample("4+4=", "9", False),
        UnpairedExample("5+1=", "6", True),
        UnpairedExample("2+2=", "5", False),
    ]
    batch = UnpairedCollator(tok, max_len=32)(ex)
    model = make_model(3)
    obj = KTOObjective(KTOConfig(beta=0.5))
    obj.setup(model)
    first = obj.loss(model, batch)
    assert first.loss.item() == pytest.approx(0.5, abs=1e-6)  # r = z = 0: 1 - σ(0) for all
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):
        out = obj.loss(model, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = obj.loss(model, batch)
    assert last.loss.item() < first.loss.item()
    assert last.metrics["rewards/chosen"] > 0 > last.metrics["rewards/rejected"]
    assert "kl" in last.metrics
