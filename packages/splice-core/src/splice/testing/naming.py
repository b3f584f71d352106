"""Failures that say whose component broke: the kind, tag, plugin, distribution and module.

A conformance suite may run over every registered implementation of a kind (parametrized
over the registry), so "output shape (2, 5) expected (2, 6)" alone does not say where to
look. ``NamedConformance`` prefixes every failure of its ``test_*`` methods with
``describe(kind, config)``, e.g.::

    retriever 'bm25' of plugin 'rag' (splice-rag), module splice_rag.bm25: ...

Suites subclass it, set ``kind`` and define ``make_config()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar


def describe(kind: str, config: Any) -> str:
    """``"<kind> '<tag>' of plugin '<plugin>' (<distribution>), module <module>"``.

    The module is where the registered factory lives (a lazy ``"module:attr"`` factory's
    module, or a callable's ``__module__``). A config that is not registered is described
    by its class.
    """
    from splice.registry import get_registry

    tag = getattr(config, "type", type(config).__name__)
    try:
        reg = get_registry().get(kind, tag)
    except (ValueError, KeyError):
        return f"{kind} {tag!r} (not registered; config {type(config).__module__})"
    if isinstance(reg.factory, str):
        module = reg.factory.partition(":")[0]
    else:
        module = getattr(reg.factory, "__module__", None) or type(reg.factory).__module__
    return f"{kind} {tag!r} of plugin {reg.plugin!r} ({reg.distribution}), module {module}"


@contextmanager
def failures_named(kind: str, config: Any) -> Iterator[None]:
    """Re-raise an ``AssertionError`` (a failed check) with ``describe(kind, config)`` first."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{describe(kind, config)}: {exc}") from exc


def _named(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)  # keeps the signature, so pytest still passes tmp_path
    def run(self: NamedConformance, *args: Any, **kwargs: Any) -> Any:
        with failures_named(self.kind, self.make_config()):
            return test(self, *args, **kwargs)

    run.__named__ = True  # type: ignore[attr-defined]
    return run


class NamedConformance:
    """Base of the suites whose failures name the component (see ``describe``).

    Every ``test_*`` method a subclass defines is wrapped, so a failed check reads
    ``"<kind> '<tag>' of plugin ..., module ...: <what broke>"``.
    """

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith("test_") and callable(value) and not getattr(value, "__named__", 0):
                setattr(cls, name, _named(value))

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")


__all__ = ["NamedConformance", "describe", "failures_named"]
