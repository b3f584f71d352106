"""Which distribution to install for a tag nothing installed registers (unknown-tag hints).

The table lives beside this module in ``install_hints.json``, ``{kind: {tag: distribution}}``.
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

HINTS_FILE = Path(__file__).with_name("install_hints.json")


def load() -> dict[str, dict[str, str]]:
    """The checked-in table, ``{kind: {tag: distribution}}`` (empty before its first run)."""
    if not HINTS_FILE.is_file():
        return {}
    return json.loads(HINTS_FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def compute(registry: Any, distributions: set[str]) -> dict[str, dict[str, str]]:
    """The table for the registrations of ``distributions`` (the first-party ones; not
    splice-core, whose tags are always there) found in a loaded ``registry``."""
    from splice.registry import KINDS

    table: dict[str, dict[str, str]] = {}
    for kind in sorted(KINDS):
        for reg in registry.registrations(kind):
            if reg.distribution in distributions and reg.distribution != "splice-core":
                table.setdefault(kind, {})[reg.tag] = reg.distribution
    return table


def install_advice(distribution: str) -> str:
    """How to install ``distribution``: from wheels, as nothing is published on an index yet."""
    return (
        f"Install the plugin that provides it, {distribution}: in a splice checkout build the "
        f"wheels (`uv build --all-packages --wheel -o wheels`), then in your project "
        f"`uv add --find-links wheels {distribution}` (or `uv pip install --find-links wheels "
        f"{distribution}`); see docs/writing-plugins.md#installing-plugins-from-wheels"
    )


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
    from splice.registry import get_registry

    table = compute(get_registry(), workspace_distributions(Path(root)))
    HINTS_FILE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {HINTS_FILE.name}: {sum(map(len, table.values()))} tags", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
