"""A reward that is any Python function named by ``"package.module:function"``.

Building it imports the module: this executes the user's own code, named by their
own config, just as running a recipe file does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from splice.rewards.configs import CallableRewardConfig


def import_callable(path: str) -> Callable[..., Any]:
    """Import ``"package.module:attr[.attr...]"`` and return the callable it names.

    Raises:
        ValueError: the module cannot be imported, the attribute is missing, or it is not callable.
    """
    module_name, _, attr = path.partition(":")
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
