"""Conformance of the RL kinds: advantage estimators and policy losses (``splice.rl.kinds``).

Components are built with ``splice.rl.kinds.build_advantage_estimator`` /
``build_policy_loss`` and called with the typed inputs; one written against the 0.1
positional calls still runs (with a ``DeprecationWarning``).

``AdvantageEstimatorConformance`` (one advantage per completion from the rewards and groups,
``estimator(AdvantageInputs(rewards (N,), group_size)) -> AdvantageOutput`` with ``(N,)``
advantages, a prompt's ``G`` completions adjacent):

- ``(N,)`` finite advantages, also for a group whose rewards are all equal (no 0/0);
- within a group a higher reward never gets a lower advantage;
- permuting completions inside a group permutes their advantages (the groups are the
  adjacent ``G`` rows, not a strided view).

``TokenAdvantageEstimatorConformance`` (per-token advantages from a critic, like ``gae``:
``AdvantageInputs`` with ``mask``, ``token_rewards`` and ``values`` ``(N, L)`` -> ``(N, L)``
advantages, optional ``(N, L)`` returns):

- ``(N, L)`` finite advantages (and returns, when given);
- padding is invisible: rewards and values where ``mask`` is False change nothing on the
  mask (a row's episode ends at its last real token, it never bootstraps from padding);
- causal: an action's advantage does not depend on rewards received before it;
- rows are independent (batch statistics are the objective's business, e.g. PPO's
  ``whiten_advantages``);
- direction: a higher final score never lowers any of its row's advantages, and a higher
  value ``V(s_t)`` never raises ``A_t`` (the critic is a baseline).

``PolicyLossConformance`` (``loss(PolicyLossInputs(logprobs (N, L), old_logprobs (N, L),
advantages (N,) or (N, L), mask (N, L))) -> output`` with ``output.per_token (N, L)``):

- ``(N, L)`` finite per-token losses;
- on-policy (``logprobs == old_logprobs``) the gradient on a real token has the sign of
  ``-advantage`` (raise the log-prob of what did well), and zero advantages give zero;
- per-token advantages ``(N, L)``: the same on-policy rule token by token, and an ``(N,)``
  advantage broadcast to ``(N, L)`` gives the same losses as the ``(N,)`` one;
- padding is invisible: changing log-probs where ``mask`` is False leaves the masked
  losses unchanged;
- permuting the completions permutes the per-token losses.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from splice.rl.kinds import (
    AdvantageInputs,
    PolicyLossInputs,
    build_advantage_estimator,
    build_policy_loss,
)
from splice.testing.naming import NamedConformance


def build_component(kind: str, config: Any) -> Any:
    """``factory(config, None)`` of the registration of ``config`` for ``kind``."""
    from splice.registry import get_registry

    return get_registry().build(kind, config, None)


class AdvantageEstimatorConformance(NamedConformance):
    """The checks of one registered advantage estimator; define ``make_config()``."""

    kind: ClassVar[str] = "advantage_estimator"

    group_size = 4

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _advantages(self, rewards: Tensor) -> Tensor:
        config = self.make_config()
        out = build_advantage_estimator(config)(AdvantageInputs(rewards, self.group_size))
        adv = getattr(out, "advantages", out)
        assert isinstance(adv, Tensor) and tuple(adv.shape) == tuple(rewards.shape), (
            f"advantage estimator {config.type!r} returned "
            f"{tuple(getattr(adv, 'shape', ())) or type(adv).__name__} for rewards of shape "
            f"{tuple(rewards.shape)}; expected the same shape"
        )
        assert torch.isfinite(adv).all(), (
            f"advantage estimator {config.type!r}: non-finite advantages for rewards "
            f"{rewards.tolist()} (a group of equal rewards must not divide by a zero std)"
        )
        return adv

    def _rewards(self) -> Tensor:
        g = torch.Generator().manual_seed(0)
        r = torch.rand(3 * self.group_size, generator=g)
        r[: self.group_size] = 0.5  # one group with no signal
        return r

    def test_shape_and_finite_values(self) -> None:
        self._advantages(self._rewards())

    def test_higher_reward_never_gets_a_lower_advantage(self) -> None:
        r = self._rewards()
        adv = self._advantages(r).view(-1, self.group_size)
        rg = r.view(-1, self.group_size)
        for i in range(rg.shape[0]):
            order = rg[i].argsort()
            assert (adv[i][order].diff() >= -1e-6).all(), (
                f"{self.make_config().type!r}: in group {i} a higher reward got a lower "
                f"advantage (rewards {rg[i].tolist()}, advantages {adv[i].tolist()})"
            )

    def test_groups_are_the_adjacent_rows(self) -> None:
        r = self._rewards()
        g = self.group_size
        perm = torch.cat([torch.randperm(g, generator=torch.Generator().manual_seed(i)) + i * g
                          for i in range(r.numel() // g)])  # fmt: skip
        base, moved = self._advantages(r), self._advantages(r[perm])
        assert torch.allclose(base[perm], moved, atol=1e-5), (
            f"{self.make_config().type!r}: shuffling completions inside their group changes "
            "their advantages (groups must be the G adjacent rows, as generate returns them)"
        )


class PolicyLossConformance(NamedConformance):
    """The checks of one registered policy loss; define ``make_config()``."""

    kind: ClassVar[str] = "policy_loss"

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _inputs(self, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        n, t = 4, 6
        old = -torch.rand(n, t, generator=g) * 3
        mask = torch.ones(n, t, dtype=torch.bool)
        mask[1, 4:] = mask[3, 2:] = False  # shorter completions, right-padded
        adv = torch.tensor([1.0, -0.5, 0.0, 2.0])
        return old.clone().requires_grad_(), old, adv, mask

    def _per_token(self, logprobs: Tensor, old: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
        config = self.make_config()
        out = build_policy_loss(config)(PolicyLossInputs(logprobs, old, adv, mask))
        per_token = getattr(out, "per_token", None)
        assert isinstance(per_token, Tensor) and per_token.shape == logprobs.shape, (
            f"policy loss {config.type!r} must return an object with per_token of shape "
            f"{tuple(logprobs.shape)}, got {type(out).__name__}"
        )
        assert torch.isfinite(per_token).all(), f"policy loss {config.type!r}: non-finite losses"
        return per_token

    def test_on_policy_gradient_follows_the_advantage(self) -> None:
        logprobs, old, adv, mask = self._inputs()
        (self._per_token(logprobs, old, adv, mask) * mask).sum().backward()
        grad = logprobs.grad
        assert grad is not None
        name = self.make_config().type
        for i, a in enumerate(adv.tolist()):
            g = grad[i][mask[i]]
            if a == 0:
                assert torch.allclose(g, torch.zeros_like(g)), (
                    f"{name!r}: a zero advantage still moves completion {i}"
                )
            else:
                assert (torch.sign(g) == -torch.sign(torch.tensor(a))).all(), (
                    f"{name!r}: on-policy, completion {i} (advantage {a}) gets gradient "
                    f"{g.tolist()}; expected the sign of -advantage on every real token"
                )

    def test_per_token_advantages(self) -> None:
        import pytest

        logprobs, old, adv, mask = self._inputs()
        name = self.make_config().type
        if getattr(build_policy_loss(self.make_config()), "legacy_call", False):
            pytest.skip(f"{name!r} uses the 0.1 call: one advantage per completion only")
        with torch.no_grad():
            seq = self._per_token(logprobs.detach(), old, adv, mask) * mask
            wide = adv[:, None].expand(mask.shape).contiguous()  # (N, L), the same values
            tok = self._per_token(logprobs.detach(), old, wide, mask) * mask
        assert torch.allclose(seq, tok, atol=1e-6), (
            f"{name!r}: per-token advantages (N, L) equal to the per-completion ones (N,) give "
            "different losses (read both layouts: PolicyLossInputs.token_advantages())"
        )
        # Signs that change along a row: each token must follow its own advantage.
        per_tok = torch.tensor([[1.0, -1.0, 0.0, 2.0, -0.5, 1.0]]).repeat(mask.shape[0], 1)
        (self._per_token(logprobs, old, per_tok, mask) * mask).sum().backward()
        grad = logprobs.grad
        assert grad is not None
        want = torch.where(mask, -torch.sign(per_tok), torch.zeros_like(per_tok))
        got = torch.where(mask, torch.sign(grad), torch.zeros_like(grad))
        assert torch.equal(got, want), (
            f"{name!r}: on-policy with per-token advantages {per_tok[0].tolist()}, the "
            f"gradient signs are {got.tolist()}; expected the sign of -A_t on every real token "
            "(a loss that reads one advantage per completion ignores a critic's estimates)"
        )

    def test_padding_is_invisible(self) -> None:
        logprobs, old, adv, mask = self._inputs()
        junk = logprobs.detach().clone()
        junk[~mask] = junk[~mask] - 5.0
        with torch.no_grad():
            base = self._per_token(logprobs.detach(), old, adv, mask) * mask
            moved = self._per_token(junk, old, adv, mask) * mask
        assert torch.allclose(base, moved, atol=1e-6), (
            f"{self.make_config().type!r}: log-probs under padding (mask False) change the "
            "losses of real tokens (average and ratio only over mask)"
        )

    def test_completions_are_permutation_equivariant(self) -> None:
        logprobs, old, adv, mask = self._inputs()
        lp = logprobs.detach() + 0.1 * torch.randn(
            logprobs.shape, generator=torch.Generator().manual_seed(3)
        )
        order = torch.tensor([2, 0, 3, 1])
        with torch.no_grad():
            base = self._per_token(lp, old, adv, mask) * mask
            moved = self._per_token(lp[order], old[order], adv[order], mask[order]) * mask[order]
        assert torch.allclose(base[order], moved, atol=1e-6), (
            f"{self.make_config().type!r}: permuting completions does not permute their losses"
        )


class TokenAdvantageEstimatorConformance(NamedConformance):
    """The checks of one registered per-token (critic-based) advantage estimator, such as
    ``gae``; define ``make_config()``. Inputs: ``N = 4`` rows of ``L = 6`` tokens, group size 1."""

    kind: ClassVar[str] = "advantage_estimator"

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _inputs(self) -> AdvantageInputs:
        g = torch.Generator().manual_seed(0)
        mask = torch.zeros(4, 6, dtype=torch.bool)
        for i, n in enumerate([6, 4, 1, 5]):
            mask[i, :n] = True  # right-padded completions
        scores = torch.tensor([1.0, -0.5, 0.3, 2.0])
        last = (mask.sum(-1) - 1)[:, None]
        token_rewards = (-0.1 * torch.rand(4, 6, generator=g)).scatter_add(
            1, last, scores[:, None]
        ) * mask
        values = torch.randn(4, 6, generator=g) * mask
        return AdvantageInputs(scores, 1, mask, token_rewards, values)

    def _run(self, inputs: AdvantageInputs) -> tuple[Tensor, Tensor | None]:
        config = self.make_config()
        out = build_advantage_estimator(config)(inputs)
        adv, ret = getattr(out, "advantages", None), getattr(out, "returns", None)
        shape = tuple(inputs.token_rewards.shape)  # type: ignore[union-attr]
        assert isinstance(adv, Tensor) and tuple(adv.shape) == shape, (
            f"advantage estimator {config.type!r} returned advantages of shape "
            f"{tuple(getattr(adv, 'shape', ())) or type(adv).__name__}; expected per-token "
            f"{shape} in an AdvantageOutput"
        )
        assert torch.isfinite(adv).all(), f"{config.type!r}: non-finite advantages"
        if ret is not None:
            assert tuple(ret.shape) == shape and torch.isfinite(ret).all(), (
                f"{config.type!r}: returns must be finite and {shape}, got {tuple(ret.shape)}"
            )
        return adv, ret

    def _replace(self, inputs: AdvantageInputs, **fields: Tensor) -> AdvantageInputs:
        from dataclasses import replace

        return replace(inputs, **fields)

    def test_shapes_and_finite_values(self) -> None:
        self._run(self._inputs())

    def test_padding_is_invisible(self) -> None:
        x = self._inputs()
        off = (~x.mask).float()  # type: ignore[operator]
        junk = self._replace(
            x,
            token_rewards=x.token_rewards + 7.0 * off,  # type: ignore[operator]
            values=x.values + 9.0 * off,  # type: ignore[operator]
        )
        (a, r), (a2, r2) = self._run(x), self._run(junk)
        m = x.mask
        same = torch.allclose(a[m], a2[m], atol=1e-5) and (
            r is None or r2 is None or torch.allclose(r[m], r2[m], atol=1e-5)
        )
        assert same, (
            f"{self.make_config().type!r}: rewards or values under padding (mask False) change "
            "the advantages or returns of real tokens (a row's episode ends at its last real "
            "token: V past it is 0, never the padding's value)"
        )

    def test_an_action_ignores_earlier_rewards(self) -> None:
        x = self._inputs()
        bumped = x.token_rewards.clone()  # type: ignore[union-attr]
        bumped[:, 2] += 1.0
        a, _ = self._run(x)
        a2, _ = self._run(self._replace(x, token_rewards=bumped * x.mask))
        later = x.mask.clone()  # type: ignore[union-attr]
        later[:, :3] = False
        assert torch.allclose(a[later], a2[later], atol=1e-6), (
            f"{self.make_config().type!r}: a reward at token 2 changes the advantages of tokens "
            "after it (an action's advantage sums the rewards that follow it: accumulate "
            "backwards in time)"
        )

    def test_rows_are_independent(self) -> None:
        x = self._inputs()
        rewards = x.token_rewards.clone()  # type: ignore[union-attr]
        rewards[0] += 5.0
        a, _ = self._run(x)
        a2, _ = self._run(self._replace(x, token_rewards=rewards * x.mask))
        m = x.mask.clone()  # type: ignore[union-attr]
        m[0] = False
        assert torch.allclose(a[m], a2[m], atol=1e-6), (
            f"{self.make_config().type!r}: changing row 0's rewards changes other rows' "
            "advantages (batch statistics such as whitening are the objective's business)"
        )

    def test_rewards_raise_and_values_lower_the_advantage(self) -> None:
        x = self._inputs()
        name = self.make_config().type
        last = (x.mask.sum(-1) - 1)[:, None]  # type: ignore[union-attr]
        higher = x.token_rewards.scatter_add(1, last, torch.ones(4, 1))  # type: ignore[union-attr]
        a, _ = self._run(x)
        a2, _ = self._run(self._replace(x, rewards=x.rewards + 1.0, token_rewards=higher))
        m = x.mask
        assert bool((a2[m] >= a[m] - 1e-6).all()) and bool((a2[m] > a[m] + 1e-6).any()), (
            f"{name!r}: a higher final score lowers (or never raises) its row's advantages"
        )
        values = x.values.clone()  # type: ignore[union-attr]
        values[:, 0] += 1.0
        a3, _ = self._run(self._replace(x, values=values * x.mask))
        assert bool((a3[:, 0] < a[:, 0] - 1e-6).all()), (
            f"{name!r}: a higher value V(s_0) does not lower A_0 (the critic is a baseline: "
            "A_t estimates Q(s_t, a_t) - V(s_t))"
        )


__all__ = [
    "AdvantageEstimatorConformance",
    "PolicyLossConformance",
    "TokenAdvantageEstimatorConformance",
    "build_component",
]
