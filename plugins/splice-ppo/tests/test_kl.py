"""The per-token KL penalty folded into the reward, and the adaptive KL coefficient."""

from __future__ import annotations

import math

import pytest
import torch
from splice_ppo.kl import AdaptiveKLController, shaped_rewards, token_kl


def test_token_kl_estimators():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    torch.testing.assert_close(token_kl(lp, ref, estimator="k1"), torch.tensor([0.5, -1.0, 0.0]))
    # k3 = (rho - 1) - log rho, rho = p_ref / p
    rho = torch.exp(ref - lp)
    torch.testing.assert_close(token_kl(lp, ref, estimator="k3"), rho - 1 - torch.log(rho))
    assert (token_kl(lp, ref, estimator="k3") >= 0).all()
    with pytest.raises(ValueError, match="'k9'"):
        token_kl(lp, ref, estimator="k9")  # type: ignore[arg-type]


def test_shaped_rewards_score_on_last_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.2, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    r = shaped_rewards(torch.tensor([1.0, -2.0]), kl, mask, kl_coef=0.5)
    expect = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.2, 0.1 - 2.0, 0.0]])
    torch.testing.assert_close(r, expect)


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(kl=12.0, n_sequences=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    ctl.update(kl=5.4, n_sequences=10)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))
    state = ctl.state_dict()
    other = AdaptiveKLController(0.1, target=6.0, horizon=100)
    other.load_state_dict(state)
    assert other.value == ctl.value
    fixed = AdaptiveKLController(0.3)
    fixed.update(kl=100.0, n_sequences=64)
    assert math.isclose(fixed.value, 0.3)
