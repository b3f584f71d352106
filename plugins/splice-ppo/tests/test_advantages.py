"""GAE (as PPO builds it: the registered ``gae`` estimator), whitening and explained
variance against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from splice.rl.advantages import gae
from splice.rl.kinds import AdvantageInputs, build_advantage_estimator
from splice.rl.stats import explained_variance, masked_mean, masked_var, whiten
from splice_ppo.configs import PPOConfig

TERMS = [{"reward": {"type": "length_penalty", "target": 2, "scale": 0.1}}]


def ppo_gae(rewards, values, mask, *, gamma, lam):
    """GAE the way ``PPOObjective`` computes it: the estimator of ``PPOConfig(gamma, lam)``
    built through the registry, called with per-token rewards, values and mask."""
    cfg = PPOConfig(rewards=TERMS, gamma=gamma, lam=lam)
    estimator = build_advantage_estimator(cfg.advantage_config())
    scores = torch.zeros(rewards.shape[0])  # unused: token_rewards hold the scores
    out = estimator(AdvantageInputs(scores, 1, mask, rewards, values))
    return out.advantages, out.returns


def test_gae_hand_computed():
    # gamma = 0.9, lambda = 0.8, so gamma * lambda = 0.72.
    # Row 0 (3 tokens): r = [0, 0, 1], V = [0.5, 0.2, 0.4]
    #   t=2: delta = 1 + 0.9*0 - 0.4 = 0.6               A = 0.6
    #   t=1: delta = 0 + 0.9*0.4 - 0.2 = 0.16            A = 0.16 + 0.72*0.6 = 0.592
    #   t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32           A = -0.32 + 0.72*0.592 = 0.10624
    # Row 1 (2 tokens, third is padding whose reward/value must be ignored):
    #   r = [0.5, 1.0, (7)], V = [0.1, 0.3, (9)]
    #   t=1: delta = 1 + 0.9*0 - 0.3 = 0.7               A = 0.7
    #   t=0: delta = 0.5 + 0.9*0.3 - 0.1 = 0.67          A = 0.67 + 0.72*0.7 = 1.174
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 1.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    want_adv = torch.tensor([[0.10624, 0.592, 0.6], [1.174, 0.7, 0.0]])
    want_ret = torch.tensor([[0.60624, 0.792, 1.0], [1.274, 1.0, 0.0]])
    for estimate in (gae, ppo_gae):  # the function, and PPO's registered estimator
        adv, ret = estimate(rewards, values, mask, gamma=0.9, lam=0.8)
        torch.testing.assert_close(adv, want_adv)
        torch.testing.assert_close(ret, want_ret)


def test_gae_from_scores_alone_puts_each_on_its_last_token():
    # No token_rewards: the estimator places each score on its row's last real token.
    # gamma = lambda = 1, V = 0: every token's advantage is its row's score.
    mask = torch.tensor([[True, True, True], [True, False, False]])
    est = build_advantage_estimator({"type": "gae", "gamma": 1.0, "lam": 1.0})
    out = est(AdvantageInputs(torch.tensor([2.0, -1.0]), 1, mask, values=torch.zeros(2, 3)))
    torch.testing.assert_close(out.advantages, torch.tensor([[2.0, 2.0, 2.0], [-1.0, 0, 0]]))


def test_the_01_names_warn_and_are_splice_rl_s():
    import splice.rl.stats as stats
    import splice_ppo.advantages as old

    with pytest.warns(DeprecationWarning, match=r"splice_ppo.advantages.gae .* splice.rl"):
        assert old.gae is gae
    with pytest.warns(DeprecationWarning, match=r"splice.rl.stats.whiten"):
        assert old.whiten is stats.whiten


def test_gae_limits():
    torch.manual_seed(0)
    r, v = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]).bool()
    m = mask.float()
    # lambda = 1, gamma = 1: Monte-Carlo return-to-go minus the value.
    adv, ret = gae(r, v, mask, gamma=1.0, lam=1.0)
    togo = (r * m).flip(1).cumsum(1).flip(1) * m
    torch.testing.assert_close(adv, (togo - v) * m)
    torch.testing.assert_close(ret, togo)
    # lambda = 0: the one-step TD error r_t + gamma V_{t+1} - V_t.
    adv0, _ = gae(r, v, mask, gamma=0.5, lam=0.0)
    nxt = torch.cat([v[:, 1:] * m[:, 1:], torch.zeros(3, 1)], dim=1)
    torch.testing.assert_close(adv0, (r + 0.5 * nxt - v) * m)


def test_gae_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"rewards \(2, 3\), values \(2, 4\)"):
        gae(
            torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool), gamma=1, lam=1
        )


def test_whiten_over_mask_only():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    w = whiten(x, mask)
    # masked values 1, 2, 3, 4: mean 2.5, unbiased var 5/3
    expect = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / (5 / 3 + 1e-8) ** 0.5
    torch.testing.assert_close(w[mask], expect)
    assert (w[~mask] == 0).all()
    torch.testing.assert_close(masked_mean(w, mask), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked_var(w, mask), torch.tensor(1.0), atol=1e-6, rtol=0)
    kept = whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(masked_mean(kept, mask), torch.tensor(2.5))


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones_like(ret, dtype=torch.bool)
    assert float(explained_variance(ret, ret, mask)) == pytest.approx(1.0)
    assert float(explained_variance(torch.full_like(ret, 2.5), ret, mask)) == pytest.approx(0.0)
    # residual [0, 1, 0, 1] has var 1/3 against var(returns) = 5/3: 1 - 0.2 = 0.8
    v = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert float(explained_variance(v, ret, mask)) == pytest.approx(0.8)
    assert torch.isnan(explained_variance(ret, torch.ones_like(ret), mask))
