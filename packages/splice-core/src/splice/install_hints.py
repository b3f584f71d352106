"""Regenerate the unknown-tag install hints (``splice.install_advice`` reads them).

The table lives in ``splice/install_hints.json``, ``{kind: {tag: distribution}}``.
It is not written by hand: ``python -m splice.install_hints`` regenerates it from what the
first-party distributions actually register through their entry points (the registry
records each registration's distribution), and ``tests/test_install_hints.py`` fails when
the checked-in file differs from that. A tag that nothing registers cannot appear in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from splice.install_advice import HINTS_FILE, install_advice, load
from splice.registry import KINDS, get_registry


def compute(registry: Any, distributions: set[str]) -> dict[str, dict[str, str]]:
    """The table for the registrations of ``distributions`` (the first-party ones; not
    splice-core, whose tags are always there) found in a loaded ``registry``."""
    table: dict[str, dict[str, str]] = {}
    for kind in sorted(KINDS):
        for reg in registry.registrations(kind):
            if reg.distribution in distributions and reg.distribution != "splice-core":
                table.setdefault(kind, {})[reg.tag] = reg.distribution
    return table


def workspace_distributions(root: Path) -> set[str]:
    """The distribution names of a splice checkout's ``packages/*`` and ``plugins/*``."""
    import tomllib

    names = set()
    for pyproject in [
        *root.glob("packages/*/pyproject.toml"),
        *root.glob("plugins/*/pyproject.toml"),
    ]:
        names.add(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"])
    return names


def main(root: str = ".") -> None:
    """Rewrite ``install_hints.json`` from what the checkout's packages register (run it in a
    checkout's environment, where every first-party package is installed)."""
    table = compute(get_registry(), workspace_distributions(Path(root)))
    HINTS_FILE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {HINTS_FILE.name}: {sum(map(len, table.values()))} tags", file=sys.stderr)


__all__ = [  # load / install_advice / HINTS_FILE live in install_advice (the registry reads them)
    "HINTS_FILE",
    "compute",
    "install_advice",
    "load",
    "main",
    "workspace_distributions",
]

if __name__ == "__main__":
    main(*sys.argv[1:])
