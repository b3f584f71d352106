from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from splice_forgetting.configs import EWCConfig
from splice_forgetting.ewc import EWC, estimate_fisher, load_fisher


def _old_task_batches(make_batch, n: int = 3) -> list[dict[str, torch.Tensor]]:
    return [make_batch("+", n=4, seed=s) for s in range(n)]


def _brute_force_fisher(model, batches) -> dict[str, torch.Tensor]:
    """Mean over batches of (d mean-NLL / d theta)^2, via .backward() and a hand-written loss."""
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for batch in batches:
        model.zero_grad()
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            batch["labels"][:, 1:].reshape(-1),
            ignore_index=-100,
        )
        loss.backward()
        for n, p in model.named_parameters():
            fisher[n] += p.grad.square()
    model.zero_grad()
    return {n: f / len(batches) for n, f in fisher.items()}


def test_fisher_matches_brute_force_per_batch_computation(make_model, make_batch) -> None:
    model = make_model()
    batches = _old_task_batches(make_batch)
    fisher, count = estimate_fisher(model, batches, n_batches=10)
    expected = _brute_force_fisher(model, batches)
    assert count == 3
    assert fisher.keys() == expected.keys()
    for name in fisher:
        torch.testing.assert_close(fisher[name], expected[name], rtol=1e-4, atol=1e-10)
    assert sum(float(f.sum()) for f in fisher.values()) > 0.0


def test_fisher_uses_at_most_n_batches_and_leaves_grads_alone(make_model, make_batch) -> None:
    model = make_model()
    batches = _old_task_batches(make_batch, n=4)
    fisher, count = estimate_fisher(model, iter(batches), n_batches=2)
    expected = _brute_force_fisher(model, batches[:2])
    assert count == 2
    torch.testing.assert_close(
        fisher["embed.weight"], expected["embed.weight"], rtol=1e-4, atol=1e-10
    )
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # restored after the eval-mode estimate


def test_penalty_zero_at_start_then_weighted_by_fisher(make_model, make_batch, perturb) -> None:
    model = make_model()
    reg = EWC(EWCConfig(weight=2.0, n_batches=3))
    reg.setup(model, _old_task_batches(make_batch))
    assert reg.penalty(model, make_batch("-")).item() == 0.0
    deltas = perturb(model, 0.02)
    expected = 0.5 * 2.0 * sum(float((reg.fisher[n] * d.square()).sum()) for n, d in deltas.items())
    assert reg.penalty(model, make_batch("-")).item() == pytest.approx(expected, rel=1e-5)
    perturb(model, 0.02, seed=2)
    assert reg.penalty(model, {}).item() > 0.0


def test_gradient_is_weight_times_fisher_times_displacement(
    make_model, make_batch, perturb
) -> None:
    model = make_model()
    reg = EWC(EWCConfig(weight=3.0))
    reg.setup(model, _old_task_batches(make_batch))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    perturb(model, 0.05)
    reg.penalty(model, {}).backward()
    for name, p in model.named_parameters():
        analytic = 3.0 * reg.fisher[name] * (p.detach() - start[name])
        torch.testing.assert_close(p.grad, analytic, rtol=1e-5, atol=1e-9)


def test_fisher_round_trips_through_safetensors(make_model, make_batch, tmp_path) -> None:
    path = tmp_path / "sub" / "fisher.safetensors"
    model = make_model()
    first = EWC(EWCConfig(fisher_path=str(path)))
    first.setup(model, _old_task_batches(make_batch))
    assert path.exists() and first.fisher_batches == 3
    second = EWC(EWCConfig(fisher_path=str(path)))
    second.setup(model, data=None)  # loads: no old-task data needed
    assert second.fisher.keys() == first.fisher.keys()
    for name in first.fisher:
        assert torch.equal(second.fisher[name], first.fisher[name])


def test_fisher_file_for_another_model_is_rejected(make_model, make_batch, tmp_path) -> None:
    path = tmp_path / "fisher.safetensors"
    EWC(EWCConfig(fisher_path=str(path))).setup(make_model(), _old_task_batches(make_batch))
    with pytest.raises(ValueError, match="fisher_path"):
        EWC(EWCConfig(fisher_path=str(path))).setup(make_model(d_model=8), None)
    with pytest.raises(ValueError, match="shape"):
        load_fisher(path, expected=dict(make_model(d_model=8).named_parameters()))


def test_mean_normalisation_gives_unit_mean_importance(make_model, make_batch) -> None:
    model = make_model()
    reg = EWC(EWCConfig(normalize="mean"))
    reg.setup(model, _old_task_batches(make_batch))
    flat = torch.cat([w.reshape(-1) for w in reg.importance.values()])
    assert flat.mean().item() == pytest.approx(1.0, rel=1e-5)


def test_setup_without_data_or_file_is_an_error(make_model) -> None:
    with pytest.raises(ValueError, match="old task"):
        EWC(EWCConfig()).setup(make_model(), None)
