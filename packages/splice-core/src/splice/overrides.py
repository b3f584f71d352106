"""``--set a.b=value`` overrides applied to a pydantic config, then re-validated.

A value is parsed as JSON when it parses (``3``, ``1e-3``, ``true``, ``null``,
``[1, 2]``, ``{"type": "rmsnorm"}``) and kept as a string otherwise (``name=run-2``).
Path segments walk into nested configs and dicts; an integer segment indexes a list
(``regularizers.0.weight=0.1``). The whole config is validated afterwards, so a
misspelled or badly typed field fails with pydantic's error naming its full path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel

C = TypeVar("C", bound=BaseModel)


def parse_value(text: str) -> Any:
    """JSON if ``text`` is valid JSON, else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignment(item: str) -> tuple[list[str], Any]:
    """``"train.optimizer.lr=3e-4"`` -> ``(["train", "optimizer", "lr"], 0.0003)``."""
    key, sep, value = item.partition("=")
    path = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in path):
        raise ValueError(f"bad override {item!r}: expected dotted.key=value, e.g. train.steps=100")
    return path, parse_value(value)


def set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Assign ``value`` at ``path`` inside nested dicts/lists, creating missing dict levels."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            node = node[_index(part, node, where)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ValueError(
                f"cannot set {'.'.join(path)}: {where} is {node!r}, not a config or mapping"
            )
    last = path[-1]
    if isinstance(node, list):
        node[_index(last, node, ".".join(path))] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(
            f"cannot set {'.'.join(path)}: its parent is {node!r}, not a config or mapping"
        )


def _index(part: str, node: list[Any], where: str) -> int:
    try:
        i = int(part)
    except ValueError:
        raise ValueError(f"{where}: {part!r} indexes a list, expected an integer") from None
    if not -len(node) <= i < len(node):
        raise ValueError(f"{where}: index {i} out of range for a list of {len(node)}")
    return i


def apply_overrides(config: C, overrides: Iterable[str]) -> C:
    """A new, validated config: ``config`` with each ``dotted.key=value`` applied in order.

    Raises:
        ValueError: a malformed override, or a path through something that is not a mapping.
        pydantic.ValidationError: the result is not a valid config (names the field).
    """
    overrides = list(overrides)
    if not overrides:
        return config
    data = config.model_dump(mode="json")
    for item in overrides:
        path, value = parse_assignment(item)
        set_path(data, path, value)
    return type(config).model_validate(data)
