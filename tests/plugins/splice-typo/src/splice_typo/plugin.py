"""``register_token_mixer`` (no "s") matches no hookspec: pluggy would never call it."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl


@hookimpl
def register_token_mixer(register: Any) -> None:
    raise AssertionError("never called: the hook name is misspelled")
