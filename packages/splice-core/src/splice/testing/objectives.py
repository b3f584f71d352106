"""Conformance of a training objective (kind ``objective``): ``ObjectiveConformance``.

An objective computes ``loss(model, batch) -> LossOutput(loss, metrics, n_tokens)``; an
online one (``OnlineObjective``) first ``collect``-s its batch by generating from prompts.
Subclass the suite, define ``make_config()`` and, where the objective reads another batch
than SFT's, ``make_examples()`` and ``collate(examples)`` (e.g. preference pairs and their
collator). On a tiny decoder (attention from splice-mha; override ``make_model()``) it checks:

- the loss is a finite scalar with a graph; metrics are ``{str: float}``; ``n_tokens`` an
  int >= 0;
- gradients reach every trainable parameter (``may_skip`` for those a tiny batch cannot
  reach), finite;
- a small gradient step on the loss lowers it (the gradient descends the value returned);
  ``step_lowers_loss = False`` for an on-policy surrogate whose value cannot move;
- a mean loss does not depend on the batch size or order: the same examples twice, or
  reversed, give the same loss (offline objectives; ``batch_size_invariant = False`` with
  the reason for a loss that is not a mean);
- ``loss`` leaves the model's weights alone; ``setup`` leaves them alone; the optional
  capabilities it has keep their contracts (``splice.testing.protocols``);
- two builds under one seed give the same loss; the config round-trips through JSON and
  every config field changes the loss or its metrics.

The model (and the objective's trainable modules) are perturbed after ``setup`` (as training moves it off its reference), so a
term that vanishes at the reference (a KL penalty) shows. Online objectives collect from ``make_prompts()`` (two arithmetic prompts) with a seeded
``splice.rl.rollout.Rollouts`` generator of ``max_new_tokens`` tokens and are checked on
the first minibatch. Every failure names the objective's tag, plugin and module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from splice.interfaces import (
    HasTrainableModules,
    LossOutput,
    Minibatched,
    OnlineObjective,
    SetsUp,
    Stateful,
)
from splice.testing.checks import perturb_parameters
from splice.testing.naming import NamedConformance


def distinct_characters(
    prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
) -> list[float]:
    """A reward that differs between random completions (the number of distinct characters
    in each), so an RL objective's advantages on a tiny untrained model are not all zero:
    ``{"type": "callable", "path": "splice.testing.objectives:distinct_characters"}``."""
    return [float(len(set(c))) for c in completions]


class ObjectiveConformance(NamedConformance):
    """The checks of one registered objective; define ``make_config()``.

    Knobs:
        make_model(), make_examples(), collate(examples), make_prompts(): the tiny setup.
        may_skip: ``fnmatch`` patterns of parameters allowed no gradient on a tiny batch.
        batch_size_invariant: False for a loss that is not a mean over rows or tokens.
        step_lowers_loss: False for a loss whose value cannot move with the weights on its
            own batch (an on-policy surrogate built with the current policy as the old one:
            its value is constant, only its gradient is meaningful).
        max_new_tokens: generation budget of an online objective's rollouts.
        config_fields_exempt: fields that cannot change the loss here (say why).
    """

    kind: ClassVar[str] = "objective"
    may_skip: ClassVar[tuple[str, ...]] = ()
    batch_size_invariant: ClassVar[bool] = True
    step_lowers_loss: ClassVar[bool] = True
    max_new_tokens: ClassVar[int] = 4
    config_fields_exempt: ClassVar[tuple[str, ...]] = ()
    atol: ClassVar[float] = 1e-5

    # -- the tiny setup -------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        from splice.data.tokenizer import CharTokenizer

        return CharTokenizer()

    def make_model(self) -> nn.Module:
        """A 2-layer width-32 decoder over the character tokenizer (splice-mha attention)."""
        from splice.models.build import build_model

        return build_model(
            {
                "type": "decoder",
                "vocab_size": self.tokenizer.vocab_size,
                "d_model": 32,
                "n_layers": 2,
                "max_seq_len": 48,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
            }
        )

    def make_examples(self) -> list[Any]:
        """Four arithmetic ``Example``s of different lengths."""
        from splice.data.examples import Example

        return [
            Example(f"{a}+{b}=", str(a + b), str(a + b))
            for a, b in [(12, 34), (5, 6), (78, 9), (3, 210)]
        ]

    def collate(self, examples: list[Any]) -> Mapping[str, Any]:
        from splice.data.collate import SFTCollator

        return SFTCollator(self.tokenizer, max_len=32)(examples)

    def make_prompts(self) -> Mapping[str, Any]:
        from splice.data.arithmetic import ArithmeticTask
        from splice.rl.rollout import PromptBatches

        task = ArithmeticTask("+", max_digits=2)
        return PromptBatches(task, self.tokenizer, prompts_per_step=2, seed=0).batch(0)

    # -- helpers -----------------------------------------------------------
    def ready(self, config: Any = None, *, seed: int = 0) -> tuple[Any, nn.Module]:
        """``(objective, model)``: both built under ``seed``, the objective set up."""
        from splice.registry import get_registry

        config = self.make_config() if config is None else config
        torch.manual_seed(seed)
        model = self.make_model()
        objective = get_registry().build("objective", config, None)
        assert hasattr(objective, "loss"), (
            f"the factory built a {type(objective).__name__} without loss(model, batch)"
        )
        if isinstance(objective, SetsUp):
            objective.setup(model, None)
        # Move the policy off its starting weights, as training does: a term that is zero
        # while the policy equals its reference (a KL penalty) must show too.
        perturb_parameters(model, seed=seed + 11, scale=0.05)
        if isinstance(objective, HasTrainableModules):  # a value head that starts at zero
            for i, module in enumerate(objective.trainable_modules().values()):
                perturb_parameters(module, seed=seed + 12 + i, scale=0.05)
        return objective, model

    def batch(self, objective: Any, model: nn.Module, examples: list[Any] | None = None) -> Any:
        """The batch ``loss`` reads: collated examples, or an online objective's first
        minibatch of experience collected from ``make_prompts()``."""
        if isinstance(objective, OnlineObjective):
            from splice.generation.sampling import SamplingConfig
            from splice.rl.rollout import Rollouts

            sampling = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=1.0)
            generate = Rollouts(sampling, self.tokenizer, seed=0).generator(0)
            experience = objective.collect(model, self.make_prompts(), generate)
            if isinstance(objective, Minibatched):
                return next(iter(objective.minibatches(experience)))
            return experience
        return self.collate(self.make_examples() if examples is None else examples)

    def loss(self, objective: Any, model: nn.Module, batch: Any) -> LossOutput:
        out = objective.loss(model, batch)
        assert isinstance(out, LossOutput), (
            f"loss() returned a {type(out).__name__}; expected splice.interfaces.LossOutput"
        )
        return out

    def _trainable(self, objective: Any, model: nn.Module) -> dict[str, nn.Parameter]:
        params = {f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad}
        if isinstance(objective, HasTrainableModules):
            for name, module in objective.trainable_modules().items():
                params |= {
                    f"{name}.{n}": p for n, p in module.named_parameters() if p.requires_grad
                }
        return params

    # -- the tests -----------------------------------------------------------
    def test_loss_is_a_finite_scalar_with_float_metrics(self) -> None:
        objective, model = self.ready()
        out = self.loss(objective, model, self.batch(objective, model))
        assert isinstance(out.loss, Tensor) and out.loss.dim() == 0, (
            f"LossOutput.loss must be a 0-dim tensor, got {getattr(out.loss, 'shape', out.loss)}"
        )
        assert torch.isfinite(out.loss) and out.loss.requires_grad, (
            f"the loss {out.loss.item()} must be finite and carry a graph"
        )
        bad = {
            k: v
            for k, v in out.metrics.items()
            if not isinstance(k, str)
            or isinstance(v, bool)
            or not isinstance(v, float | int)
            or not math.isfinite(v)
        }
        assert not bad, f"metrics must be {{str: finite float}}; got {bad} (call .item())"
        assert isinstance(out.n_tokens, int) and out.n_tokens >= 0, (
            f"n_tokens must be an int >= 0, got {out.n_tokens!r}"
        )

    def test_gradients_reach_every_trainable_parameter(self) -> None:
        import fnmatch

        objective, model = self.ready()
        self.loss(objective, model, self.batch(objective, model)).loss.backward()
        missing, bad = [], []
        for name, p in self._trainable(objective, model).items():
            if any(fnmatch.fnmatch(name, pat) for pat in self.may_skip):
                continue
            if p.grad is None or not p.grad.abs().sum() > 0:
                missing.append(name)
            elif not torch.isfinite(p.grad).all():
                bad.append(name)
        assert not missing and not bad, (
            f"no or zero gradient on {missing[:4]}, non-finite on {bad[:4]} "
            f"({len(missing)} and {len(bad)} parameters)"
        )

    def test_a_gradient_step_lowers_the_loss(self) -> None:
        if not self.step_lowers_loss:
            import pytest

            pytest.skip("step_lowers_loss = False")
        objective, model = self.ready()
        batch = self.batch(objective, model)
        params = list(self._trainable(objective, model).values())
        before = self.loss(objective, model, batch).loss
        grads = torch.autograd.grad(before, params, allow_unused=True)
        results = []
        for lr in (1e-1, 1e-2, 1e-3):
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.sub_(lr * g)
                after = self.loss(objective, model, batch).loss.item()
                for p, g in zip(params, grads):
                    if g is not None:
                        p.add_(lr * g)
            results.append(after)
            if after < before.item():
                return
        raise AssertionError(
            f"a gradient step (lr 0.1, 0.01, 0.001) never lowers the loss {before.item():.5f} "
            f"on its own batch: {results} (the gradient does not descend the loss it returns: "
            "a sign flipped in the gradient path, or a surrogate whose value and gradient differ)"
        )

    def test_mean_loss_is_batch_size_and_order_invariant(self) -> None:
        objective, model = self.ready()
        if isinstance(objective, OnlineObjective) or not self.batch_size_invariant:
            import pytest

            pytest.skip("an online objective's batch is generated" if self.batch_size_invariant
                        else "batch_size_invariant = False")  # fmt: skip
        examples = self.make_examples()
        with torch.no_grad():
            base = self.loss(objective, model, self.batch(objective, model, examples)).loss
            twice = self.loss(objective, model, self.batch(objective, model, examples * 2)).loss
            back = self.loss(objective, model, self.batch(objective, model, examples[::-1])).loss
        for what, got in (("the batch repeated twice", twice), ("the batch reversed", back)):
            assert torch.allclose(got, base, atol=self.atol, rtol=1e-5), (
                f"{what} gives loss {got.item():.6f}, the batch {base.item():.6f}: a mean loss "
                "must not depend on the batch size or order (sum over rows, then divide)"
            )

    def test_loss_and_setup_leave_the_weights_alone(self) -> None:
        from splice.registry import get_registry
        from splice.testing.protocols import check_sets_up

        objective, model = self.ready()
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.loss(objective, model, self.batch(objective, model))
        changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
        assert not changed, f"loss() changed the model's {changed[:4]} (the optimizer updates)"
        fresh = get_registry().build("objective", self.make_config(), None)
        if isinstance(fresh, SetsUp):
            check_sets_up(fresh, self.make_model())

    def test_optional_capabilities_keep_their_contracts(self) -> None:
        from splice.testing.protocols import check_stateful, check_trainable_modules

        objective, model = self.ready()
        self.loss(objective, model, self.batch(objective, model))
        if isinstance(objective, HasTrainableModules):
            check_trainable_modules(objective)
        if isinstance(objective, Stateful):
            check_stateful(objective)

    def test_deterministic_under_seed(self) -> None:
        losses = []
        for _ in range(2):
            objective, model = self.ready(seed=0)
            with torch.no_grad():
                losses.append(self.loss(objective, model, self.batch(objective, model)).loss)
        assert torch.equal(losses[0], losses[1]), (
            f"two builds under one seed give losses {losses[0].item()} and {losses[1].item()}"
        )

    def test_config_roundtrips_through_json(self) -> None:
        from splice.testing.checks import check_config_roundtrip

        check_config_roundtrip(self.make_config(), kind="objective")

    def test_config_fields_are_honoured(self) -> None:
        from splice.testing.wiring import check_fields_change

        def loss_and_metrics(config: Any) -> Any:
            objective, model = self.ready(config)
            out = self.loss(objective, model, self.batch(objective, model))
            return (out.loss.detach(), sorted(out.metrics.items()))

        check_fields_change(
            self.make_config(),
            loss_and_metrics,
            exempt=self.config_fields_exempt,
            what="the loss or its metrics",
        )


__all__ = ["ObjectiveConformance", "distinct_characters"]
