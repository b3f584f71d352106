"""splice.rl: the one k3, group normalisation, and the old import paths as warning aliases."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch
from splice.rl.advantages import group_normalize, reward_groups
from splice.rl.kl import k1, k3, token_kl

ROOT = Path(__file__).resolve().parents[3]


def test_k3_is_the_unbiased_nonnegative_estimator():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(4, 7, generator=g, dtype=torch.float64), -1)
    ref = torch.log_softmax(torch.randn(4, 7, generator=g, dtype=torch.float64), -1)
    q = ref - logp
    torch.testing.assert_close(k3(logp, ref), torch.exp(q) - q - 1, rtol=1e-12, atol=1e-15)
    assert (k3(logp, ref) >= 0).all() and torch.equal(k3(logp, logp), torch.zeros_like(logp))
    # Unbiased: E_{y ~ π}[k3] = KL(π || π_ref), exactly when summed with π's probabilities.
    exact = (logp.exp() * (logp - ref)).sum(-1)
    torch.testing.assert_close((logp.exp() * k3(logp, ref)).sum(-1), exact)
    torch.testing.assert_close((logp.exp() * k1(logp, ref)).sum(-1), exact)
    assert torch.equal(token_kl(logp, ref, estimator="k3"), k3(logp, ref))
    with pytest.raises(ValueError, match="'k1' or 'k3', got 'k2'"):
        token_kl(logp, ref, estimator="k2")  # type: ignore[arg-type]


def test_one_k3_implementation_in_the_workspace():
    """The k3 formula is written once, in splice.rl.kl; everything else calls it."""
    formula = re.compile(r"torch\.expm1\(|torch\.exp\([^)]*\)\s*-\s*\w+\s*-\s*1")
    found = []
    for path in sorted([*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")]):
        for line in path.read_text().splitlines():
            if formula.search(line) and "log1p" not in line and "-torch.expm1" not in line:
                found.append(str(path.relative_to(ROOT)))
    assert found == ["packages/splice-core/src/splice/rl/kl.py"], found


def test_group_normalize_centres_and_scales_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # 2 prompts x 3 completions
    adv = group_normalize(rewards, 3).view(2, 3)
    torch.testing.assert_close(adv[0], (rewards[:3] - 1 / 3) / (rewards[:3].std() + 1e-4))
    assert torch.equal(adv[1], torch.zeros(3))  # equal rewards: no signal
    assert torch.equal(group_normalize(rewards, 3, scale_by_std=False).view(2, 3)[0],
                       rewards[:3] - rewards[:3].mean())  # fmt: skip
    with pytest.raises(ValueError, match=r"shape \(6,\) do not split into groups of 4"):
        reward_groups(rewards, 4)


@pytest.mark.parametrize(
    ("old", "new"),
    [("splice.training.rollout", "splice.rl.rollout"), ("splice.reference", "splice.rl.reference")],
)
def test_old_import_paths_warn_and_are_the_new_modules(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated.*use {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_clipped_surrogate_clips_only_against_the_advantage():
    from splice.rl.surrogate import clipped_surrogate

    log_ratio = torch.log(torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]])).requires_grad_()
    adv = torch.tensor([[1.0], [-1.0]])
    sur = clipped_surrogate(log_ratio, adv, eps_low=0.2)
    # A > 0: a ratio above 1.2 is clipped (no more incentive); below 0.8 it is not.
    # A < 0: a ratio below 0.8 is clipped; above 1.2 it is not.
    torch.testing.assert_close(
        sur.per_token.detach(), torch.tensor([[-0.5, -1.0, -1.2], [0.8, 1.0, 1.5]])
    )
    assert sur.clipped.tolist() == [[False, False, True], [True, False, False]]
    sur.per_token.sum().backward()
    grad = log_ratio.grad
    assert grad is not None and grad[0, 2] == 0 and grad[1, 0] == 0 and grad[0, 0] != 0
