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
