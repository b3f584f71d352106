"""Conformance checks any registered component can be run through (PEFT-style common tester).

Each ``check_*`` function takes a registered config and a ``BuildContext`` and
raises ``AssertionError`` with a message naming what broke. They are plain
functions so they run from a script or a notebook; ``splice.testing.suites``
wraps them into pytest classes.
"""

from __future__ import annotations

import fnmatch
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from splice.interfaces import BuildContext
from splice.testing.specs import KindSpec, Probe, Result, kind_of, spec_for

PositionMixing = Literal["causal", "bidirectional", "pointwise"]


def _spec(config: Any, kind: str | None) -> KindSpec:
    return spec_for(kind or kind_of(config))


Prepare = Callable[[nn.Module], None]


def build_seeded(
    config: Any,
    ctx: BuildContext | None,
    *,
    seed: int = 0,
    kind: str | None = None,
    prepare: Prepare | None = None,
) -> nn.Module:
    """Build ``config`` with the global torch RNG seeded (so parameter init is reproducible).

    ``prepare(module)`` then runs, e.g. to open a zero-initialised gate or give a LoRA ``B``
    non-zero values, so that every parameter is exercised (PEFT's ``init_lora_weights=False``).
    """
    torch.manual_seed(seed)
    module = _spec(config, kind).build(config, ctx)
    if prepare is not None:
        prepare(module)
    return module


def make_probe(
    module: nn.Module,
    config: Any,
    ctx: BuildContext | None,
    *,
    kind: str | None = None,
    batch: int = 2,
    seq_len: int = 6,
    dtype: torch.dtype = torch.float32,
    seed: int = 1234,
) -> Probe:
    """Tiny random inputs for ``module``, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return _spec(config, kind).probe(
        module, config, ctx, batch=batch, seq_len=seq_len, dtype=dtype, generator=g
    )


def _run(spec: KindSpec, module: nn.Module, probe: Probe, *, grad: bool = False) -> Result:
    with torch.set_grad_enabled(grad):
        return spec.run(module, probe)


# --------------------------------------------------------------------------- the checks
def check_output(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    prepare: Prepare | None = None,
    kind: str | None = None,
    dtype: torch.dtype = torch.float32,
    batch: int = 2,
    seq_len: int = 6,
) -> None:
    """The output has the documented shape, the input's dtype, and finite values."""
    spec = _spec(config, kind)
    module = build_seeded(config, ctx, kind=spec.kind, prepare=prepare).to(dtype).eval()
    probe = make_probe(
        module, config, ctx, kind=spec.kind, batch=batch, seq_len=seq_len, dtype=dtype
    )
    out = _run(spec, module, probe).output
    expected = spec.expected_shape(config, ctx, batch, seq_len)
    assert tuple(out.shape) == expected, (
        f"{config.type}: output shape {tuple(out.shape)}, expected {expected}"
    )
    assert out.dtype == dtype, (
        f"{config.type}: output dtype {out.dtype} for {dtype} inputs and weights"
    )
    assert torch.isfinite(out).all(), f"{config.type}: output has non-finite values"


def check_gradients(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    prepare: Prepare | None = None,
    kind: str | None = None,
    may_skip: tuple[str, ...] = (),
    batch: int = 2,
    seq_len: int = 6,
) -> None:
    """A loss on the output sends finite, non-zero gradients to every input and trainable parameter.

    Args:
        may_skip: ``fnmatch`` patterns of parameter names allowed to get no or zero
            gradient on one tiny batch (e.g. experts no token was routed to).
    """
    spec = _spec(config, kind)
    module = build_seeded(config, ctx, kind=spec.kind, prepare=prepare).train()
    probe = make_probe(module, config, ctx, kind=spec.kind, batch=batch, seq_len=seq_len)
    res = _run(spec, module, probe, grad=True)
    # A random weighting: sum(LayerNorm(x)) alone is constant in x and would send zero gradients.
    weights = torch.randn(res.output.shape, generator=torch.Generator().manual_seed(7))
    loss = (res.output.float() * weights).sum() + sum(
        (a.float() for a in res.aux_losses), torch.zeros(())
    )
    loss.backward()  # type: ignore[no-untyped-call]
    for name, t in probe.grad_inputs.items():
        assert t.grad is not None, f"{config.type}: no gradient reached input {name!r}"
        assert torch.isfinite(t.grad).all(), f"{config.type}: non-finite gradient on input {name!r}"
        assert t.grad.abs().sum() > 0, f"{config.type}: zero gradient on input {name!r}"
    for name, p in module.named_parameters():
        if not p.requires_grad or any(fnmatch.fnmatch(name, pat) for pat in may_skip):
            continue
        assert p.grad is not None, f"{config.type}: no gradient reached parameter {name!r}"
        assert torch.isfinite(p.grad).all(), f"{config.type}: non-finite gradient on {name!r}"
        assert p.grad.abs().sum() > 0, f"{config.type}: zero gradient on parameter {name!r}"


def perturb_parameters(module: nn.Module, seed: int = 3, scale: float = 0.1) -> nn.Module:
    """Add ``scale * N(0, 1)`` noise to every floating parameter, in place; returns ``module``.

    Checks of behaviour (position mixing, isolation, batch composition, config fields) run
    on perturbed weights, as a trained model has them: a part that starts at zero (a gate,
    a LoRA ``B``, a convolution's history taps) would otherwise hide what it does.
    """
    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point() and p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))
    return module


def _perturb(module: nn.Module, seed: int) -> None:
    """Add noise to every floating tensor of the state dict, so a failed load is visible."""
    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point() and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                t.add_(0.1 * torch.randn(t.shape, generator=g).to(t.dtype))


def check_state_dict_roundtrip(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    tmp_dir: str | Path | None = None,
    prepare: Prepare | None = None,
) -> None:
    """Save a (perturbed) module with safetensors, load into a fresh one: identical outputs.

    Uses ``safetensors.torch.save_model``/``load_model`` (strict), which handle tied weights.
    """
    from safetensors.torch import load_model, save_model

    spec = _spec(config, kind)
    source = build_seeded(config, ctx, seed=0, kind=spec.kind, prepare=prepare)
    _perturb(source, seed=3)
    target = build_seeded(config, ctx, seed=1, kind=spec.kind, prepare=prepare)
    source.eval()
    target.eval()
    probe = make_probe(source, config, ctx, kind=spec.kind)
    want = _run(spec, source, probe).output
    before = _run(spec, target, probe).output
    if source.state_dict():
        assert not torch.equal(want, before), (
            f"{config.type}: output does not depend on the state dict; the round-trip check is blind"
        )
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        path = str(Path(d) / "model.safetensors")
        save_model(source, path)
        load_model(target, path, strict=True)
    got = _run(spec, target, probe).output
    assert torch.equal(got, want), (
        f"{config.type}: outputs differ after a safetensors round-trip "
        f"(max abs diff {(got - want).abs().max().item():.3g})"
    )


def check_config_roundtrip(config: Any, *, kind: str | None = None) -> None:
    """Config -> JSON -> config (through the registry's resolver) gives an identical config."""
    from pydantic import TypeAdapter

    from splice.config import component_field

    kind = kind or kind_of(config)
    js = config.model_dump_json()
    back = TypeAdapter(component_field(kind)).validate_json(js)
    assert type(back) is type(config), f"{config.type}: JSON came back as {type(back).__name__}"
    assert back == config, f"{config.type}: config changed through JSON:\n{config!r}\n{back!r}"
    assert back.model_dump_json() == js, f"{config.type}: JSON is not stable through a round-trip"


def check_determinism(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    prepare: Prepare | None = None,
    kind: str | None = None,
    seed: int = 0,
) -> None:
    """Two builds under the same seed have equal state and give identical outputs."""
    spec = _spec(config, kind)
    a = build_seeded(config, ctx, seed=seed, kind=spec.kind, prepare=prepare).eval()
    b = build_seeded(config, ctx, seed=seed, kind=spec.kind, prepare=prepare).eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{config.type}: state-dict keys differ between two builds"
    for name in sa:
        assert torch.equal(sa[name], sb[name]), (
            f"{config.type}: {name!r} differs under the same seed"
        )
    probe = make_probe(a, config, ctx, kind=spec.kind)
    assert torch.equal(_run(spec, a, probe).output, _run(spec, b, probe).output), (
        f"{config.type}: two builds under seed {seed} give different outputs"
    )


def _replace_varying(probe: Probe, start: int, seed: int, stop: int | None = None) -> Probe:
    """A copy of ``probe`` whose varying input is re-drawn at positions ``start:stop``."""
    v = probe.varying
    assert v is not None, "this kind's probe has no position-indexed input"
    g = torch.Generator().manual_seed(seed)
    new = v.detach().clone()
    if new.is_floating_point():
        new[:, start:stop] = torch.randn(new[:, start:stop].shape, generator=g).to(new.dtype)
    else:
        # Shift every id by one, modulo the largest id seen: all change, all stay in the vocabulary.
        new[:, start:stop] = (new[:, start:stop] + 1) % (int(v.max()) + 1)
    args = tuple(new if a is v else a for a in probe.args)
    return Probe(args, probe.kwargs, {}, new)


def check_position_mixing(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    prepare: Prepare | None = None,
    kind: str | None = None,
    expect: PositionMixing = "causal",
    seq_len: int = 6,
    atol: float = 1e-6,
) -> None:
    """Changing the inputs at positions ``>= t0`` changes earlier outputs exactly as ``expect`` says.

    ``causal``: earlier outputs unchanged; ``bidirectional``: earlier outputs change;
    ``pointwise``: earlier outputs unchanged, and changing positions ``< t0`` leaves
    outputs ``>= t0`` unchanged too (each position depends only on itself).
    """
    spec = _spec(config, kind)
    module = build_seeded(config, ctx, kind=spec.kind, prepare=prepare)
    perturb_parameters(module).eval()  # a zero-initialised path must show its mixing too
    probe = make_probe(module, config, ctx, kind=spec.kind, seq_len=seq_len)
    t0 = seq_len // 2
    base = _run(spec, module, probe).output
    changed = _run(spec, module, _replace_varying(probe, t0, seed=11)).output
    past_same = torch.allclose(base[:, :t0], changed[:, :t0], atol=atol, rtol=0)
    assert not torch.allclose(base[:, t0:], changed[:, t0:], atol=atol, rtol=0), (
        f"{config.type}: output ignores its own inputs at positions >= {t0}"
    )
    if expect == "bidirectional":
        assert not past_same, (
            f"{config.type}: earlier outputs ignore later inputs (expected bidirectional)"
        )
        return
    assert past_same, (
        f"{config.type}: earlier outputs changed when later inputs changed ({expect} expected)"
    )
    if expect == "pointwise":  # and later outputs must ignore earlier inputs
        earlier = _run(spec, module, _replace_varying(probe, 0, seed=12, stop=t0)).output
        assert torch.allclose(base[:, t0:], earlier[:, t0:], atol=atol, rtol=0), (
            f"{config.type}: outputs at positions >= {t0} changed when earlier inputs changed"
            " (expected pointwise)"
        )


def check_kv_cache(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    prepare: Prepare | None = None,
    kind: str | None = None,
    seq_len: int = 7,
    prefill: int = 3,
    atol: float = 1e-5,
) -> None:
    """Prefill ``prefill`` tokens, then decode one at a time with a KV cache: equals the full pass.

    For ``token_mixer`` (self-attention reading ``inputs.cache``) and ``model`` (DecoderLM
    signature: ``model(ids, cache=...)`` and ``model.new_cache(max_len)``).
    """
    from splice.generation.kv_cache import KVCache
    from splice.interfaces import AttentionInputs

    spec = _spec(config, kind)
    module = build_seeded(config, ctx, kind=spec.kind, prepare=prepare).eval()
    probe = make_probe(module, config, ctx, kind=spec.kind, seq_len=seq_len)
    full = _run(spec, module, probe).output
    steps = [(0, prefill), *((t, t + 1) for t in range(prefill, seq_len))]
    outs: list[Tensor] = []
    with torch.no_grad():
        if spec.kind == "model":
            ids = probe.args[0]
            cache = module.new_cache(seq_len)  # type: ignore[operator]
            for a, b in steps:
                outs.append(spec.result(module(ids[:, a:b], cache=cache), probe).output)
        elif spec.kind == "token_mixer":
            x, inputs = probe.args
            kv = KVCache(1, seq_len)
            for a, b in steps:
                step = AttentionInputs(
                    inputs.positions[:, a:b],
                    None,
                    a == 0,
                    kv.layers[0],
                    inputs.context,
                    inputs.context_mask,
                )
                outs.append(module(x[:, a:b], step))
                kv.advance(b - a)
        else:
            raise ValueError(f"check_kv_cache supports token_mixer and model, not {spec.kind!r}")
    inc = torch.cat(outs, dim=1)
    diff = (inc - full).abs().max().item()
    assert diff <= atol, f"{config.type}: cached decoding differs from the full pass by {diff:.3g}"


def run_all(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    prepare: Prepare | None = None,
    kind: str | None = None,
    position_mixing: PositionMixing | None = None,
    kv_cache: bool = False,
    may_skip: tuple[str, ...] = (),
) -> None:
    """Run every applicable check on one config (a one-call smoke test for scripts)."""
    kind = kind or kind_of(config)
    check_output(config, ctx, kind=kind, prepare=prepare)
    check_gradients(config, ctx, kind=kind, may_skip=may_skip, prepare=prepare)
    check_state_dict_roundtrip(config, ctx, kind=kind, prepare=prepare)
    check_config_roundtrip(config, kind=kind)
    check_determinism(config, ctx, kind=kind, prepare=prepare)
    if position_mixing is not None:
        check_position_mixing(config, ctx, kind=kind, expect=position_mixing, prepare=prepare)
    if kv_cache:
        check_kv_cache(config, ctx, kind=kind, prepare=prepare)
