"""A reward that is any Python function named by ``"package.module:function"``.

Building it imports the module: this executes the user's own code, named by their
own config, just as running a recipe file does. A config read from a run folder
(``splice eval --run``, ``splice generate``) is someone else's until the user says
otherwise: inside ``untrusted_configs(source)`` only allow-listed modules are imported
(splice and its plugins' ``splice_*`` packages, and the prefixes listed in
``SPLICE_TRUSTED_MODULES``); anything else is refused, naming the module and ``--trust-code``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from splice.rewards.configs import CallableRewardConfig

TRUST_ENV = "SPLICE_TRUSTED_MODULES"
# None: the config is the user's own (a recipe, their Python); else where it was read from.
_UNTRUSTED_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "splice_untrusted_source", default=None
)


@contextlib.contextmanager
def untrusted_configs(source: str, *, trust_code: bool = False) -> Iterator[None]:
    """Within this block, code a config names is imported only from the allow-list
    (``trust_code=True``: the user vouched for ``source``; everything is imported)."""
    token = _UNTRUSTED_SOURCE.set(None if trust_code else source)
    try:
        yield
    finally:
        _UNTRUSTED_SOURCE.reset(token)


def allow_listed(module_name: str) -> bool:
    """Whether ``module_name`` is splice's, a plugin's (``splice_*``) or under a prefix in
    ``SPLICE_TRUSTED_MODULES`` (comma-separated, e.g. ``my_rewards,lab.verifiers``)."""
    top = module_name.split(".")[0]
    if top == "splice" or top.startswith("splice_"):
        return True
    prefixes = [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",") if p.strip()]
    return any(module_name == p or module_name.startswith(p + ".") for p in prefixes)


def import_callable(path: str) -> Callable[..., Any]:
    """Import ``"package.module:attr[.attr...]"`` and return the callable it names.

    Raises:
        ValueError: the module cannot be imported, the attribute is missing, or it is not
            callable; or (inside ``untrusted_configs``) the module is not allow-listed.
    """
    module_name, _, attr = path.partition(":")
    source = _UNTRUSTED_SOURCE.get()
    if source is not None and not allow_listed(module_name):
        raise ValueError(
            f"callable reward {path!r}: {source} names the module {module_name!r}, which is "
            f"not allow-listed (splice, splice_* plugins, {TRUST_ENV}); a config read from a "
            "run folder never imports other code. If you trust that folder, pass "
            f"--trust-code (or add the module to {TRUST_ENV})"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"callable reward {path!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"callable reward {path!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"callable reward {path!r} names a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


class CallableReward:
    """Calls ``fn(prompts, completions, references, **kwargs)``; RewardSet checks the result."""

    def __init__(self, config: CallableRewardConfig) -> None:
        self.path = config.path
        self.fn = import_callable(config.path)
        self.kwargs = dict(config.kwargs)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> Any:
        return self.fn(prompts, completions, references, **self.kwargs)


def build_callable(config: CallableRewardConfig, ctx: object = None) -> CallableReward:
    return CallableReward(config)
