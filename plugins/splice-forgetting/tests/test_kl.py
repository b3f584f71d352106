from __future__ import annotations

import pytest
import torch
from splice_forgetting.configs import KLReferenceConfig
from splice_forgetting.kl import KLToReference

VARIANTS = [
    {"direction": "reverse"},
    {"direction": "forward"},
    {"estimator": "k3"},
    {"tokens": "labels"},
]


def _manual_kl(p_model, p_ref, batch, *, direction="reverse", estimator="full", tokens="attention"):
    """Loop over rows and positions; probabilities from plain softmax."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    p = torch.softmax(p_model.double(), -1)
    q = torch.softmax(p_ref.double(), -1)
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            counted = labels[b, t + 1] != -100 if tokens == "labels" else mask[b, t + 1] == 1
            if not counted:
                continue
            if estimator == "k3":
                y = ids[b, t + 1]
                r = q[b, t, y] / p[b, t, y]
                total += float(r - torch.log(r) - 1)
            elif direction == "reverse":
                total += float((p[b, t] * (p[b, t].log() - q[b, t].log())).sum())
            else:
                total += float((q[b, t] * (q[b, t].log() - p[b, t].log())).sum())
            count += 1
    return total / count


@pytest.mark.parametrize("options", VARIANTS)
def test_zero_for_the_starting_model(make_model, make_batch, options) -> None:
    model = make_model()
    reg = KLToReference(KLReferenceConfig(weight=1.0, **options))
    reg.setup(model)
    assert reg.penalty(model, make_batch()).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("options", VARIANTS)
def test_positive_and_matches_manual_computation(make_model, make_batch, perturb, options) -> None:
    model = make_model()
    reg = KLToReference(KLReferenceConfig(weight=0.5, **options))
    reg.setup(model)
    perturb(model, 0.05)
    batch = make_batch("-", n=3)
    value = reg.penalty(model, batch).item()
    with torch.no_grad():
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref = reg.reference(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert value > 0.0
    assert value == pytest.approx(0.5 * _manual_kl(logits, ref, batch, **options), rel=1e-4)


def test_reference_is_frozen_and_gradients_reach_the_model(make_model, make_batch, perturb) -> None:
    model = make_model()
    reg = KLToReference(KLReferenceConfig(weight=1.0))
    reg.setup(model)
    perturb(model, 0.05)
    reg.penalty(model, make_batch()).backward()
    assert all(not p.requires_grad for p in reg.reference.parameters())
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0
    # the reference kept the starting weights while the model moved
    assert not torch.equal(reg.reference.embed.weight, model.embed.weight)


def test_padding_positions_do_not_count(make_model, make_batch, perturb) -> None:
    model = make_model()
    reg = KLToReference(KLReferenceConfig())
    reg.setup(model)
    perturb(model, 0.05)
    batch = make_batch(n=4)
    kl, mask = reg.per_token(model, batch)
    assert kl.shape == mask.shape == (4, batch["input_ids"].shape[1] - 1)
    assert torch.equal(mask, batch["attention_mask"][:, 1:].bool())


def test_penalty_before_setup_is_an_error(make_model, make_batch) -> None:
    with pytest.raises(RuntimeError, match="setup"):
        KLToReference(KLReferenceConfig()).penalty(make_model(), make_batch())


@pytest.mark.parametrize("tokens", ["attention", "labels"])
def test_packed_rows_give_the_padded_penalty(make_model, perturb, tokens) -> None:
    """Two sequences sharing a prefix (``branch_ids``) and a third document packed after
    them in one row: the same penalty as the three sequences in padded rows."""
    model = make_model()
    reg = KLToReference(KLReferenceConfig(weight=1.0, tokens=tokens))
    reg.setup(model)
    perturb(model, 0.05)
    prefix, first, second, other = [1, 5, 6], [7, 8, 2], [9, 2], [1, 4, 7, 2]
    seqs = [prefix + first, prefix + second, other]
    width = max(map(len, seqs))
    padded = {
        "input_ids": torch.tensor([s + [0] * (width - len(s)) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
        "labels": torch.tensor(
            [[-100] * 3 + s[3:] + [-100] * (width - len(s)) for s in seqs[:2]]
            + [[-100] * 2 + other[2:] + [-100] * (width - len(other))]
        ),
    }
    # prefix but its last token once, then each branch headed by that token
    ids = [*prefix[:2], 6, *first, 6, *second, *other]
    packed = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "positions": torch.tensor([[0, 1, 2, 3, 4, 5, 2, 3, 4, 0, 1, 2, 3]]),
        "doc_ids": torch.tensor([[0] * 9 + [1] * 4]),
        "branch_ids": torch.tensor([[0, 0, 1, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0]]),
        "labels": torch.tensor([[-100] * 3 + first + [-100] + second + [-100] * 2 + other[2:]]),
    }
    want = reg.penalty(model, padded).item()  # a mean over 6 labels or 12 real next tokens
    assert want > 0.0
    if tokens == "attention":  # padded rows count the prefix's 2 next tokens twice: once here
        alone = {"input_ids": torch.tensor([prefix]), "attention_mask": torch.ones(1, 3)}
        want = (12 * want - 2 * reg.penalty(model, alone).item()) / 10
    assert reg.penalty(model, packed).item() == pytest.approx(want, rel=1e-5)
