"""Deprecation aliases: a renamed public module or name keeps working for one minor version.

The policy (docs/api-policy.md): a rename keeps the old name as an alias that emits a
``DeprecationWarning`` naming the new one, for one minor version of the package that made
the rename; the alias is removed in the minor version after that. An alias module is a
file holding one call::

    # splice/training/config.py
    from splice.deprecation import alias_module

    alias_module(__name__, "splice.training.configs", removed_in="splice-core 0.3.0")

After it the old module *is* the new one (``sys.modules`` maps both names to one module
object), so classes imported through either name are identical.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Any

#: Every alias made so far in this process: old module or name -> (new, removed_in).
ALIASES: dict[str, tuple[str, str]] = {}


def _caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside the import machinery and this module, so the
    warning names the user's ``import`` line (and ``default`` filters show it once there)."""
    frame, level = sys._getframe(1), 1  # level 1: the frame that calls warnings.warn
    while frame is not None:
        name, module = frame.f_code.co_filename, str(frame.f_globals.get("__name__", ""))
        machinery = name.startswith("<frozen importlib") or module.split(".")[0] == "importlib"
        if not (name == __file__ or machinery or _is_alias(frame)):
            return level
        # warnings.warn does not count the import system's own frames (<frozen importlib._bootstrap>)
        level += 0 if "importlib" in name and "_bootstrap" in name else 1
        frame = frame.f_back  # type: ignore[assignment]
    return 2


def _is_alias(frame: Any) -> bool:
    return frame.f_globals.get("__name__") in ALIASES


def warn_deprecated(old: str, new: str, *, removed_in: str) -> None:
    """Emit the ``DeprecationWarning`` for using ``old`` (renamed to ``new``)."""
    warnings.warn(
        f"{old} is deprecated and will be removed in {removed_in}: use {new} instead",
        DeprecationWarning,
        stacklevel=_caller_stacklevel(),
    )


def alias_module(old: str, new: str, *, removed_in: str, distribution: str = "") -> None:
    """Make the module being imported as ``old`` an alias of module ``new``, with a warning.

    Args:
        old: the deprecated module's name (pass ``__name__``).
        new: the module it was renamed to.
        removed_in: the release that drops the alias, e.g. ``"splice-core 0.3.0"``.
        distribution: where ``new`` lives when it moved to another distribution; a missing
            one then raises an ``ImportError`` that says what to install.
    """
    ALIASES[old] = (new, removed_in)
    warn_deprecated(old, new, removed_in=removed_in)
    try:
        module = importlib.import_module(new)
    except ModuleNotFoundError as e:
        if not distribution or e.name != new.split(".")[0]:
            raise
        raise ImportError(
            f"{old} moved to {new}, which is part of {distribution}: install it "
            f"(`uv add {distribution}`; see docs/installing.md)"
        ) from e
    sys.modules[old] = module


def deprecated_attribute(module: str, names: dict[str, tuple[str, Any]], *, removed_in: str) -> Any:
    """A module ``__getattr__`` serving renamed attributes with a warning.

    ``names`` maps an old attribute to ``(new spelling, zero-argument getter)``.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, get = names[name]
        ALIASES[f"{module}.{name}"] = (new, removed_in)
        warn_deprecated(f"{module}.{name}", new, removed_in=removed_in)
        return get()

    return __getattr__
