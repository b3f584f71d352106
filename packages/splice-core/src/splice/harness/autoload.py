"""Register ``--model splice`` in lm-eval 0.4.13 and older, which read no entry points.

Imported at interpreter start by the ``splice_lm_eval.pth`` line of splice-core's wheel. It
puts a finder at the front of ``sys.meta_path`` that does nothing until something imports
``lm_eval.api.registry``; then it lets the real loader run, registers the ``splice`` model
(as a lazy ``"module:Class"`` placeholder: nothing heavy is imported) and removes itself.
Newer lm-eval finds splice through the ``lm_eval.models`` entry point instead, so there the
hook stands aside (registering twice under different placeholders is an error in lm-eval).
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType
from typing import Any

WATCHED = "lm_eval.api.registry"
LAST_VERSION_WITHOUT_ENTRY_POINTS = (0, 4, 13)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def needs_hook() -> bool:
    """Whether the installed lm-eval predates entry-point discovery of models."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return _version_tuple(version("lm_eval")) <= LAST_VERSION_WITHOUT_ENTRY_POINTS
    except PackageNotFoundError:
        return False


def _after_exec(module: ModuleType) -> None:
    if not needs_hook():
        return
    import lm_eval.models  # noqa: F401  built-in placeholders, as get_model() would add them

    from splice.harness import MODEL_NAME, TARGET

    registry = module.model_registry
    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=TARGET)


class _RegisterAfterImport(MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``lm_eval.api.registry``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != WATCHED:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one shot
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            try:
                _after_exec(module)
            except Exception as exc:  # never break lm-eval itself
                print(f"splice: could not register the lm-eval model: {exc}", file=sys.stderr)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Put the finder in place unless lm-eval's registry is loaded already (then register)."""
    loaded = sys.modules.get(WATCHED)
    if loaded is not None:
        _after_exec(loaded)
        return
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


install()
