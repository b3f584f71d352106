"""What to tell a user whose config names a tag that nothing installed registers.

``install_hints.json`` (beside this module) maps ``{kind: {tag: distribution}}`` for the
first-party plugins; the registry's unknown-tag error names the distribution and how to
install it. The table is generated, never written by hand: ``splice.install_hints`` rebuilds
it from what the plugins register (that module reads the registry; this one must not, since
the registry reads this one).
"""

from __future__ import annotations

import json
from pathlib import Path

HINTS_FILE = Path(__file__).with_name("install_hints.json")


def load() -> dict[str, dict[str, str]]:
    """The checked-in table, ``{kind: {tag: distribution}}`` (empty before its first run)."""
    if not HINTS_FILE.is_file():
        return {}
    return json.loads(HINTS_FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def install_advice(distribution: str) -> str:
    """How to install ``distribution``: from wheels, as nothing is published on an index yet."""
    return (
        f"Install the plugin that provides it, {distribution}: in a splice checkout build the "
        f"wheels (`uv build --all-packages --wheel -o wheels`), then in your project "
        f"`uv add --find-links wheels {distribution}` (or `uv pip install --find-links wheels "
        f"{distribution}`); see docs/writing-plugins.md#installing-plugins-from-wheels"
    )


__all__ = ["HINTS_FILE", "install_advice", "load"]
