"""Is a component wired to the trainer and to its config?

- ``check_parameters_registered``: every tensor a module keeps is a registered parameter or
  buffer. A weight kept in a plain list, tuple or dict (``self.scales = [nn.Parameter(...)]``)
  is invisible to ``module.parameters()`` and ``state_dict()``: the optimizer never trains
  it and checkpoints never save it, yet the forward runs and every shape check passes.
- ``check_config_fields_honoured``: changing any one config field changes the built module
  (its output on a fixed input, or its state-dict shapes). A field the factory ignores
  (``bias``, ``multiple``) is a silent lie in every saved ``config.json``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor

from splice.interfaces import BuildContext
from splice.testing.checks import Prepare, build_seeded, make_probe, perturb_parameters
from splice.testing.specs import kind_of, spec_for


def _loose_tensors(value: Any, where: str) -> Iterator[str]:
    """Paths of tensors held in (nested) lists, tuples and dicts."""
    if isinstance(value, Tensor):
        yield where
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _loose_tensors(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _loose_tensors(v, f"{where}[{k!r}]")


def check_parameters_registered(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    prepare: Prepare | None = None,
    allow: tuple[str, ...] = (),
) -> None:
    """No submodule holds a tensor outside ``_parameters`` / ``_buffers`` (so every weight
    is trained and saved). ``allow``: attribute paths that are deliberately unregistered
    (a cache rebuilt on demand)."""
    kind = kind or kind_of(config)
    module = build_seeded(config, ctx, kind=kind, prepare=prepare)
    loose = []
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr.startswith("_") and attr in ("_parameters", "_buffers", "_modules"):
                continue
            for path in _loose_tensors(value, f"{name + '.' if name else ''}{attr}"):
                if path not in allow:
                    loose.append(path)
    assert not loose, (
        f"{config.type}: tensors held outside registered parameters/buffers: {loose} (the "
        "optimizer never trains them and checkpoints never save them: use nn.Parameter "
        "attributes, nn.ParameterList/ParameterDict, or register_buffer)"
    )


def _flat_types(annotation: Any) -> list[Any]:
    """The types in an annotation, through unions, ``Optional`` and ``Annotated``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _flat_types(args[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for a in args for t in _flat_types(a)]
    return [annotation]


def _is_nested_config(annotation: Any) -> bool:
    """A (list of) config(s): checked by the nested component's own suite."""
    for t in _flat_types(annotation):
        inner = [t, *(a for arg in typing.get_args(t) for a in _flat_types(arg))]
        if any(isinstance(i, type) and issubclass(i, BaseModel) for i in inner):
            return True
    return False


def alternative_values(config: Any, field: str, value: Any) -> list[Any]:
    """Other values to try for ``field`` of ``config`` (whose value is ``value``): flipped bools, other Literal options, scaled numbers."""
    flat = _flat_types(type(config).model_fields[field].annotation)
    options: list[Any] = []
    for t in flat:
        if typing.get_origin(t) is typing.Literal:
            options += list(typing.get_args(t))
    if isinstance(value, bool):
        options.append(not value)
    elif isinstance(value, int):
        options += [value * 2, value + 1, max(value - 1, 1), value // 2]
    elif isinstance(value, float):
        options += [value * 2, value / 2] if value else [0.1, 1.0]
    elif value is None:  # an optional field left unset: try concrete values of its type
        for t in flat:
            options += {bool: [True, False], int: [2, 1, 8, 4, 16, 12], float: [0.5, 2.0]}.get(
                t, []
            )
    return [o for o in dict.fromkeys(options) if o != value]


def _signature(
    config: Any, ctx: BuildContext | None, kind: str, prepare: Prepare | None
) -> tuple[dict[str, tuple[int, ...]], Tensor]:
    """State-dict shapes and the train-mode output (flattened, with any auxiliary losses)
    on a fixed input, with fixed noise."""
    spec = spec_for(kind)
    module = perturb_parameters(build_seeded(config, ctx, kind=kind, prepare=prepare)).train()
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    probe = make_probe(module, config, ctx, kind=kind)
    torch.manual_seed(5)  # dropout and noise draw the same numbers in both builds
    with torch.no_grad():
        res = spec.run(module, probe)
    # Auxiliary losses count as output: a loss weight changes them, not the hidden states.
    aux = [a.detach().float().reshape(-1) for a in res.aux_losses]
    return shapes, torch.cat([res.output.detach().float().reshape(-1), *aux])


def same_fingerprint(a: Any, b: Any) -> bool:
    """Exact equality of two fingerprints: tensors, numpy arrays, numbers, strings, and
    (nested) tuples, lists and dicts of them (shapes must match too)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if hasattr(a, "shape") and hasattr(a, "dtype"):  # a numpy array (numpy is not required)
        import numpy as np

        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_fingerprint(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_fingerprint(x, y) for x, y in zip(a, b))
    return bool(a == b)


def check_fields_change(
    config: Any,
    fingerprint: Callable[[Any], Any],
    *,
    exempt: tuple[str, ...] = (),
    what: str = "the parameters or the output",
) -> None:
    """Changing each config field (one at a time, to a valid other value) changes
    ``fingerprint(config)``: whatever the component's behaviour is summed up by (a module's
    state-dict shapes and output, a retriever's scores, an objective's loss).

    Fields holding nested configs are skipped (their own suites check them). A value the
    fingerprint cannot be computed for (``ValidationError``, ``ValueError``,
    ``RuntimeError``, ``AssertionError``) is skipped and the next tried.

    Args:
        fingerprint: ``config -> value`` compared exactly (``same_fingerprint``).
        exempt: fields that cannot show on a tiny probe (say why where you exempt them).
        what: what the fingerprint is, for the message.

    Raises:
        AssertionError: naming every field whose change left the fingerprint identical,
            and every non-exempt field no other value of which could be tried.
    """
    base = fingerprint(config)
    ignored, untried = [], []
    for field, info in type(config).model_fields.items():
        if field == "type" or field in exempt or _is_nested_config(info.annotation):
            continue  # nested configs have their own suites
        value = getattr(config, field)
        built = changed_any = False
        for other in alternative_values(config, field, value):
            try:
                changed = type(config).model_validate({**config.model_dump(), field: other})
                got = fingerprint(changed)
            except (ValidationError, ValueError, RuntimeError, AssertionError):
                continue  # not a value this context can build; try the next
            built = True
            if not same_fingerprint(got, base):
                changed_any = True
                break
        if not built:
            untried.append(field)
        elif not changed_any:
            ignored.append(f"{field}={value!r}")
    assert not ignored, (
        f"{config.type}: changing these config fields to any other valid value changed "
        f"neither {what}: {ignored} (the factory ignores them; honour each field or remove it)"
    )
    assert set(untried) <= set(exempt), (
        f"{config.type}: no other valid value of {untried} could be built here; pass them "
        "in exempt=... (the suite's config_fields_exempt) with the reason"
    )


def check_config_fields_honoured(
    config: Any,
    ctx: BuildContext | None = None,
    *,
    kind: str | None = None,
    prepare: Prepare | None = None,
    exempt: tuple[str, ...] = (),
) -> None:
    """Changing each config field (one at a time, to a valid other value) changes the module:
    its state-dict shapes or its output on a fixed input (``check_fields_change``).

    Args:
        exempt: fields that cannot show on a tiny probe (say why where you exempt them).

    Raises:
        AssertionError: naming every field whose change left shapes and outputs identical.
    """
    kind = kind or kind_of(config)
    check_fields_change(config, lambda c: _signature(c, ctx, kind, prepare), exempt=exempt)


__all__ = [
    "alternative_values",
    "check_config_fields_honoured",
    "check_fields_change",
    "check_parameters_registered",
    "same_fingerprint",
]
