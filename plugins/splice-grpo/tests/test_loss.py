"""The GRPO loss and its gradient against plain written-out implementations of the formulas
(loops over sequences and tokens, scalar arithmetic)."""

from __future__ import annotations

import math

import pytest
import torch
from splice_grpo.objective import aggregate

from .conftest import build

N, L = 4, 5
LENGTHS = [5, 3, 1, 4]


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(N, L, dtype=torch.bool)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = True
    old = -torch.rand(N, L, generator=g) * 2
    # the current policy: moved by up to +-0.4 in log space, so some ratios leave the clip
    lp = (old + (torch.rand(N, L, generator=g) - 0.5) * 0.8).requires_grad_(True)
    ref = old + (torch.rand(N, L, generator=g) - 0.5) * 0.5
    adv = torch.tensor([1.3, -0.7, 0.4, -1.1])
    return lp, old, ref, adv, mask


def written_out(lp, old, ref, adv, eps, eps_high, beta, how, max_new=L):
    """sum over i, t of [-min(r A, clip(r) A) + beta (e^q - q - 1)], normalised per `how`."""
    seq_terms = []
    total_tokens = 0
    for i in range(N):
        terms = []
        for t in range(LENGTHS[i]):
            r = torch.exp(lp[i, t] - old[i, t])
            clipped = torch.clamp(r, 1 - eps, 1 + eps_high)
            pg = -torch.minimum(r * adv[i], clipped * adv[i])
            q = ref[i, t] - lp[i, t]
            terms.append(pg + beta * (torch.exp(q) - q - 1))
        total_tokens += LENGTHS[i]
        seq_terms.append(terms)
    if how == "grpo":
        return sum(sum(ts) / len(ts) for ts in seq_terms) / N
    if how == "dr_grpo":
        return sum(sum(ts) for ts in seq_terms) / (N * max_new)
    return sum(sum(ts) for ts in seq_terms) / total_tokens


def splice_loss(lp, old, ref, adv, mask, eps, eps_high, beta, how):
    loss_fn = build(
        "policy_loss", {"type": "clipped_token", "epsilon": eps, "epsilon_high": eps_high}
    )
    per_token = loss_fn(lp, old, adv, mask).per_token
    q = ref - lp
    per_token = per_token + beta * (torch.exp(q) - q - 1)
    loss, _ = aggregate(per_token, mask, torch.ones(N), how, L)
    return loss


@pytest.mark.parametrize("how", ["grpo", "dr_grpo", "token"])
@pytest.mark.parametrize(("eps", "eps_high", "beta"), [(0.2, 0.2, 0.0), (0.1, 0.28, 0.04)])
def test_clipped_token_loss_and_gradient_match_the_formula(how, eps, eps_high, beta):
    lp, old, ref, adv, mask = inputs()
    ours = splice_loss(lp, old, ref, adv, mask, eps, eps_high, beta, how)
    (g_ours,) = torch.autograd.grad(ours, lp)
    ref_loss = written_out(lp, old, ref, adv, eps, eps_high, beta, how)
    (g_ref,) = torch.autograd.grad(ref_loss, lp)
    assert float(ours) == pytest.approx(float(ref_loss), rel=1e-6, abs=1e-7)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)
    assert bool((g_ours[~mask] == 0).all())  # padding gets no gradient
    # the example really exercises the clip: some tokens have a zero policy gradient
    r = torch.exp(lp - old).detach()
    assert bool(((r > 1 + eps_high) | (r < 1 - eps))[mask].any())


def test_clip_metrics_count_the_tokens_the_clip_silences():
    lp, old, _, adv, mask = inputs()
    out = build("policy_loss", {"type": "clipped_token", "epsilon": 0.1})(lp, old, adv, mask)
    r = torch.exp(lp - old).detach()
    a = adv[:, None].expand(N, L)
    high = ((r > 1.1) & (a > 0) & mask).sum() / mask.sum()
    low = ((r < 0.9) & (a < 0) & mask).sum() / mask.sum()
    assert float(out.metrics["clip_high"]) == pytest.approx(float(high))
    assert float(out.metrics["clip_low"]) == pytest.approx(float(low))
    assert float(out.metrics["clip_high"]) + float(out.metrics["clip_low"]) > 0


def test_gspo_matches_the_sequence_level_formula():
    """GSPO: s_i = exp(mean_t(lp - old)); loss = mean_i -min(s_i A_i, clip(s_i) A_i)."""
    lp, old, _, adv, mask = inputs(1)
    eps, eps_high = 0.05, 0.08
    out = build("policy_loss", {"type": "gspo", "epsilon": eps, "epsilon_high": eps_high})(
        lp, old, adv, mask
    )
    ours, _ = aggregate(out.per_token, mask, torch.ones(N), "grpo", L)
    (g_ours,) = torch.autograd.grad(ours, lp)
    seq_losses = []
    for i in range(N):
        n = LENGTHS[i]
        s = torch.exp(sum(lp[i, t] - old[i, t] for t in range(n)) / n)
        seq_losses.append(
            -torch.minimum(s * adv[i], torch.clamp(s, 1 - eps, 1 + eps_high) * adv[i])
        )
    formula = sum(seq_losses) / N
    (g_ref,) = torch.autograd.grad(formula, lp)
    assert float(ours) == pytest.approx(float(formula), rel=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)
    s = [math.exp(float(((lp - old)[i, : LENGTHS[i]]).mean())) for i in range(N)]
    assert any(x > 1 + eps_high or x < 1 - eps for x in s)  # the clip is exercised


@pytest.mark.parametrize("how", ["token", "dr_grpo"])
def test_gspo_with_a_length_weighted_aggregation_is_refused(how):
    """GSPO counts each sequence once; a token (or dr_grpo) mean weighs sequences by their
    length, so its gradient is not GSPO's: refused at validation, naming both fields."""
    from splice_grpo.configs import GRPOConfig

    rewards = [{"reward": {"type": "format"}}]
    with pytest.raises(ValueError, match=rf"loss_aggregation='{how}' with policy_loss 'gspo'"):
        GRPOConfig(rewards=rewards, policy_loss={"type": "gspo"}, loss_aggregation=how)
    ok = GRPOConfig(rewards=rewards, policy_loss={"type": "gspo"}, loss_aggregation="grpo")
    assert ok.policy_loss.type == "gspo"
    # and why: over sequences of different lengths, the token mean is another objective
    lp, old, _, adv, mask = inputs(1)
    per_token = build("policy_loss", {"type": "gspo"})(lp, old, adv, mask).per_token
    seq, _ = aggregate(per_token, mask, torch.ones(N), "grpo", L)
    tok, _ = aggregate(per_token, mask, torch.ones(N), how, L)
    assert abs(float(seq) - float(tok)) > 1e-3


def test_filtered_rows_leave_the_loss_and_its_normaliser():
    lp, old, _, adv, mask = inputs()
    loss_fn = build("policy_loss", {"type": "clipped_token"})
    per_token = loss_fn(lp, old, adv, mask).per_token
    w = torch.tensor([1.0, 0.0, 1.0, 0.0])
    for how in ("grpo", "dr_grpo", "token"):
        kept, count = aggregate(per_token, mask, w, how, L)
        alone, _ = aggregate(per_token[[0, 2]], mask[[0, 2]], torch.ones(2), how, L)
        assert float(kept) == pytest.approx(float(alone), rel=1e-6)
        assert count == (2 if how != "token" else LENGTHS[0] + LENGTHS[2])


def test_the_01_call_still_works_and_warns():
    """``loss(logprobs, old_logprobs, advantages, mask)`` (0.1) still works, with a warning."""
    from splice.registry import get_registry
    from splice_grpo.configs import GSPOLossConfig

    lp, old, _, adv, mask = inputs()
    loss = get_registry().build("policy_loss", GSPOLossConfig(), None)
    with pytest.warns(DeprecationWarning, match=r"PolicyLossInputs"):
        legacy = loss(lp, old, adv, mask)
    new = build("policy_loss", {"type": "gspo"})(lp, old, adv, mask)
    assert torch.equal(legacy.per_token, new.per_token)
