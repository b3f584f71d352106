"""PPO's policy loss (the registered ``clipped_token``, built from ``PPOConfig`` through the
registry as ``PPOObjective`` builds it) and value loss against written-out formulas, values and
gradients."""

from __future__ import annotations

import pytest
import torch
from splice.rl.kinds import PolicyLossInputs, build_policy_loss
from splice.rl.stats import masked_mean
from splice_ppo.configs import PPOConfig
from splice_ppo.losses import clipped_policy_loss, clipped_value_loss

EPS = 0.2
TERMS = [{"reward": {"type": "length_penalty", "target": 2, "scale": 0.1}}]


def ppo_policy_loss(logprobs, old, adv, mask):
    """``(loss, metrics)`` the way ``PPOObjective.loss`` computes them: the policy loss of
    ``PPOConfig(clip=EPS)`` built through the registry, averaged over the mask's tokens."""
    loss_fn = build_policy_loss(PPOConfig(rewards=TERMS, clip=EPS).policy_loss_config())
    out = loss_fn(PolicyLossInputs(logprobs, old, adv, mask))
    return masked_mean(out.per_token, mask), out.metrics


def _policy_case():
    torch.manual_seed(0)
    old = torch.randn(3, 6) - 2.0
    # log-ratios from -0.6 to 0.6: some tokens far outside [1 - eps, 1 + eps], some inside
    logprobs = (old + torch.linspace(-0.6, 0.6, 18).reshape(3, 6)).requires_grad_(True)
    adv = torch.randn(3, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]]).bool()
    return logprobs, old, adv, mask


def _written_out_policy(logprobs, old, adv, mask):
    """L = (1/n) sum_t max(-A_t r_t, -A_t clip(r_t, 1-eps, 1+eps)), one token at a time."""
    terms = []
    for b in range(logprobs.shape[0]):
        for t in range(logprobs.shape[1]):
            if mask[b, t]:
                r = torch.exp(logprobs[b, t] - old[b, t])
                a = adv[b, t]
                terms.append(torch.max(-a * r, -a * torch.clamp(r, 1 - EPS, 1 + EPS)))
    return torch.stack(terms).sum() / len(terms)


def test_policy_loss_value_and_gradient():
    logprobs, old, adv, mask = _policy_case()
    loss, metrics = ppo_policy_loss(logprobs, old, adv, mask)
    (grad,) = torch.autograd.grad(loss, logprobs)
    ref_lp = logprobs.detach().clone().requires_grad_(True)
    ref = _written_out_policy(ref_lp, old, adv, mask)
    (ref_grad,) = torch.autograd.grad(ref, ref_lp)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_grad)
    # The analytic gradient: -A r / n where the unclipped term is active, 0 where clipping is.
    r = torch.exp(logprobs.detach() - old)
    n = int(mask.sum())
    clipped = ((adv > 0) & (r > 1 + EPS)) | ((adv < 0) & (r < 1 - EPS))
    analytic = torch.where(clipped | ~mask, 0.0, -adv * r / n)
    torch.testing.assert_close(grad, analytic)
    assert 0 < int(clipped[mask].sum()) < n  # the case exercises both branches
    assert float(metrics["clip_fraction"]) == pytest.approx(float(clipped[mask].float().mean()))
    assert float(metrics["ratio_mean"]) == pytest.approx(float(r[mask].mean()))


def test_policy_ratio_one_means_plain_policy_gradient():
    _, old, adv, mask = _policy_case()
    lp = old.clone().requires_grad_(True)
    loss, metrics = ppo_policy_loss(lp, old, adv, mask)
    (grad,) = torch.autograd.grad(loss, lp)
    n = int(mask.sum())
    torch.testing.assert_close(grad, torch.where(mask, -adv / n, 0.0))
    assert float(metrics["clip_fraction"]) == 0.0
    assert float(metrics["ratio_mean"]) == 1.0


def test_ppo_builds_the_registered_clipped_token_loss_from_clip():
    from splice.rl.configs import ClippedTokenLossConfig
    from splice.rl.policy_losses import ClippedTokenLoss

    cfg = PPOConfig(rewards=TERMS, clip=0.3)
    assert cfg.policy_loss_config() == ClippedTokenLossConfig(epsilon=0.3)
    built = build_policy_loss(cfg.policy_loss_config())
    assert isinstance(built, ClippedTokenLoss) and built.eps_low == built.eps_high == 0.3


def test_the_01_clipped_policy_loss_warns_and_matches_the_registered_loss():
    logprobs, old, adv, mask = _policy_case()
    with pytest.warns(DeprecationWarning, match="'clipped_token'"):
        out = clipped_policy_loss(logprobs, old, adv, mask, clip=EPS)
    loss, metrics = ppo_policy_loss(logprobs, old, adv, mask)
    assert torch.equal(out.loss, loss)
    assert torch.equal(out.clip_fraction, metrics["clip_fraction"])
    lr = (logprobs.detach() - old)[mask]
    assert float(out.approx_kl) == pytest.approx(float((0.5 * lr**2).mean()))


def _written_out_value(values, old, ret, mask, clip):
    terms = []
    for b in range(values.shape[0]):
        for t in range(values.shape[1]):
            if mask[b, t]:
                v, vo, r = values[b, t], old[b, t], ret[b, t]
                vc = vo + torch.clamp(v - vo, -clip, clip)
                terms.append(0.5 * torch.max((v - r) ** 2, (vc - r) ** 2))
    return torch.stack(terms).sum() / len(terms)


def test_value_loss_value_and_gradient():
    torch.manual_seed(1)
    old = torch.randn(3, 6)
    values = (old + torch.linspace(-0.5, 0.5, 18).reshape(3, 6)).requires_grad_(True)
    ret = torch.randn(3, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]).bool()
    out = clipped_value_loss(values, old, ret, mask, clip=EPS)
    (grad,) = torch.autograd.grad(out.loss, values)
    ref_v = values.detach().clone().requires_grad_(True)
    ref = _written_out_value(ref_v, old, ret, mask, EPS)
    (ref_grad,) = torch.autograd.grad(ref, ref_v)
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(grad, ref_grad)
    # Analytic: (V - R) / n unless the clipped error is the larger (then 0).
    v = values.detach()
    vc = old + (v - old).clamp(-EPS, EPS)
    clipped = (vc - ret) ** 2 > (v - ret) ** 2
    n = int(mask.sum())
    torch.testing.assert_close(grad, torch.where(clipped | ~mask, 0.0, (v - ret) / n))
    assert 0 < int(clipped[mask].sum()) < n
    assert float(out.clip_fraction) == pytest.approx(float(clipped[mask].float().mean()))
    # Unclipped: the plain 0.5 (V - R)^2.
    plain = clipped_value_loss(values, old, ret, mask, clip=None)
    torch.testing.assert_close(plain.loss, 0.5 * ((values - ret) ** 2)[mask].mean())
