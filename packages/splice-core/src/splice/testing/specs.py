"""How to build and call one component of each kind, for the conformance checks.

A ``KindSpec`` knows, for one registry kind, how to build a component from its
config, which tiny random inputs to feed it (a ``Probe``) and which tensor of
its output to check. New kinds (adapters, objectives, ...) are added with
``register_spec``; the checks in ``splice.testing.checks`` then work for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from splice.interfaces import (
    AttentionInputs,
    Block,
    BuildContext,
    ChannelMixer,
    ChannelMixerOutput,
    Connector,
    ModelOutput,
    PooledAuxLoss,
    TokenMixer,
)


@dataclass
class Probe:
    """One forward call ``module(*args, **kwargs)`` on tiny random inputs.

    Attributes:
        args, kwargs: the call's arguments.
        grad_inputs: the floating inputs that gradients must reach, by name.
        varying: the input whose positions the position-mixing check perturbs
            (``(B, T, ...)``, float or integer), or None.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    grad_inputs: dict[str, Tensor] = field(default_factory=dict)
    varying: Tensor | None = None


@dataclass
class Result:
    """The checked tensor ``output`` and any auxiliary scalar losses the call reported."""

    output: Tensor
    aux_losses: list[Tensor] = field(default_factory=list)


def _scalars(losses: list[Tensor | PooledAuxLoss]) -> list[Tensor]:
    """Aux losses as tensors: a ``PooledAuxLoss`` is checked as a pool of one layer."""
    return [a.value() if isinstance(a, PooledAuxLoss) else a for a in losses]


class KindSpec:
    """Build-and-call recipe of one kind; subclasses fill in ``probe`` and ``result``."""

    kind: ClassVar[str] = ""
    interface: ClassVar[type] = nn.Module

    def build(self, config: Any, ctx: BuildContext | None) -> nn.Module:
        from splice.registry import get_registry

        module = get_registry().build(self.kind, config, ctx)
        if not isinstance(module, self.interface):
            raise TypeError(
                f"{self.kind} {config.type!r} built a {type(module).__name__}, "
                f"expected a {self.interface.__name__}"
            )
        return cast(nn.Module, module)

    def probe(
        self,
        module: nn.Module,
        config: Any,
        ctx: BuildContext | None,
        *,
        batch: int,
        seq_len: int,
        dtype: torch.dtype,
        generator: torch.Generator,
    ) -> Probe:
        raise NotImplementedError

    def result(self, out: Any, probe: Probe) -> Result:
        raise NotImplementedError

    def expected_shape(
        self, config: Any, ctx: BuildContext | None, batch: int, seq_len: int
    ) -> tuple[int, ...]:
        assert ctx is not None, f"{self.kind} needs a BuildContext"
        return (batch, seq_len, ctx.d_model)

    def run(self, module: nn.Module, probe: Probe) -> Result:
        return self.result(module(*probe.args, **probe.kwargs), probe)


def _hidden(
    ctx: BuildContext | None, batch: int, t: int, dtype: torch.dtype, g: torch.Generator
) -> Tensor:
    assert ctx is not None, "this kind needs a BuildContext with d_model"
    return torch.randn(batch, t, ctx.d_model, generator=g).to(dtype).requires_grad_()


class _MixerSpec(KindSpec):
    """TokenMixer and Block: ``forward(x (B, T, D), AttentionInputs) -> (B, T, D)``."""

    def probe(self, module, config, ctx, *, batch, seq_len, dtype, generator):  # type: ignore[no-untyped-def]
        assert ctx is not None
        x = _hidden(ctx, batch, seq_len, dtype, generator)
        grads = {"x": x}
        context = None
        if ctx.d_context is not None:  # cross-attention: a context of a different length
            context = torch.randn(batch, seq_len + 3, ctx.d_context, generator=generator)
            context = context.to(dtype).requires_grad_()
            grads["context"] = context
        positions = torch.arange(seq_len).expand(batch, seq_len)
        inputs = AttentionInputs(positions=positions, is_causal=ctx.causal, context=context)
        return Probe(args=(x, inputs), grad_inputs=grads, varying=x)

    def result(self, out, probe):  # type: ignore[no-untyped-def]
        return Result(out, _scalars(probe.args[1].aux_losses))

    def run(self, module: nn.Module, probe: Probe) -> Result:
        # AttentionInputs collects aux losses; give each call a fresh list.
        x, inputs = probe.args
        fresh = AttentionInputs(
            inputs.positions,
            inputs.attn_mask,
            inputs.is_causal,
            inputs.cache,
            inputs.context,
            inputs.context_mask,
        )
        return Result(module(x, fresh), _scalars(fresh.aux_losses))


class TokenMixerSpec(_MixerSpec):
    kind = "token_mixer"
    interface: ClassVar[type] = TokenMixer


class BlockSpec(_MixerSpec):
    kind = "block"
    interface: ClassVar[type] = Block


class ChannelMixerSpec(KindSpec):
    """``forward(x (B, T, D)) -> (B, T, D)`` or ``ChannelMixerOutput``."""

    kind = "channel_mixer"
    interface: ClassVar[type] = ChannelMixer

    def probe(self, module, config, ctx, *, batch, seq_len, dtype, generator):  # type: ignore[no-untyped-def]
        x = _hidden(ctx, batch, seq_len, dtype, generator)
        return Probe(args=(x,), grad_inputs={"x": x}, varying=x)

    def result(self, out, probe):  # type: ignore[no-untyped-def]
        if isinstance(out, ChannelMixerOutput):
            aux = _scalars([out.aux_loss] if out.aux_loss is not None else [])
            if aux and aux[0].dim() != 0:
                raise AssertionError(f"aux_loss must be a scalar, got shape {tuple(aux[0].shape)}")
            return Result(out.hidden, aux)
        return Result(out)


class NormSpec(ChannelMixerSpec):
    kind = "norm"
    interface: ClassVar[type] = nn.Module


class ModelSpec(KindSpec):
    """Language models: ``forward(input_ids (B, T)) -> ModelOutput`` with logits ``(B, T, V)``."""

    kind = "model"
    interface: ClassVar[type] = nn.Module

    def probe(self, module, config, ctx, *, batch, seq_len, dtype, generator):  # type: ignore[no-untyped-def]
        ids = torch.randint(0, int(config.vocab_size), (batch, seq_len), generator=generator)
        return Probe(args=(ids,), varying=ids)

    def result(self, out, probe):  # type: ignore[no-untyped-def]
        if not isinstance(out, ModelOutput) or out.logits is None:
            raise AssertionError(
                f"a model must return ModelOutput with logits, got {type(out).__name__}"
            )
        return Result(out.logits, [out.aux_loss] if out.aux_loss is not None else [])

    def expected_shape(self, config, ctx, batch, seq_len):  # type: ignore[no-untyped-def]
        return (batch, seq_len, int(config.vocab_size))


class ConnectorSpec(KindSpec):
    """Connectors: ``forward(features (B, N, D_enc)) -> (B, N', D)`` with ``D_enc =
    ctx.d_context`` and ``N' = config.n_queries`` where the config has it, else ``N``."""

    kind = "connector"
    interface: ClassVar[type] = Connector

    def probe(self, module, config, ctx, *, batch, seq_len, dtype, generator):  # type: ignore[no-untyped-def]
        assert ctx is not None and ctx.d_context, "a connector needs BuildContext(d_context=...)"
        f = torch.randn(batch, seq_len, ctx.d_context, generator=generator).to(dtype)
        f.requires_grad_()
        return Probe(args=(f,), grad_inputs={"features": f}, varying=f)

    def result(self, out, probe):  # type: ignore[no-untyped-def]
        return Result(out)

    def expected_shape(self, config, ctx, batch, seq_len):  # type: ignore[no-untyped-def]
        assert ctx is not None
        return (batch, int(getattr(config, "n_queries", seq_len)), ctx.d_model)


SPECS: dict[str, KindSpec] = {
    s.kind: s
    for s in (
        TokenMixerSpec(),
        BlockSpec(),
        ChannelMixerSpec(),
        NormSpec(),
        ModelSpec(),
        ConnectorSpec(),
    )
}


def register_spec(spec: KindSpec) -> None:
    """Make the conformance checks available for another kind (e.g. ``"adapter"``)."""
    SPECS[spec.kind] = spec


def spec_for(kind: str) -> KindSpec:
    try:
        return SPECS[kind]
    except KeyError:
        raise ValueError(
            f"no conformance spec for kind {kind!r}; known kinds: {sorted(SPECS)}"
        ) from None


def kind_of(config: Any) -> str:
    """The registry kind whose registration for ``config.type`` uses ``type(config)``."""
    from splice.registry import KINDS, get_registry

    reg = get_registry()
    for kind in KINDS:
        try:
            if reg.get(kind, config.type).config_cls is type(config):
                return kind
        except (ValueError, KeyError):
            continue
    raise ValueError(f"{type(config).__name__} (type {config.type!r}) is not a registered config")
