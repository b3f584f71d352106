"""The unknown-tag install hints are generated from the plugins' own registrations.

``splice/install_hints.json`` must equal what the workspace's packages register right now
(regenerate with ``python -m splice.install_hints``), so a renamed or removed tag cannot
leave a stale hint behind and a tag nothing registers (``gqa``) cannot be hinted.
"""

from __future__ import annotations

from pathlib import Path

from splice import install_hints
from splice.registry import get_registry

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_hints_equal_what_the_plugins_register() -> None:
    first_party = install_hints.workspace_distributions(ROOT)
    assert {"splice-core", "splice-mha", "splice-moe", "splice-recipes"} <= first_party
    computed = install_hints.compute(get_registry(), first_party)
    assert install_hints.load() == computed, (
        "splice/install_hints.json is stale: run `uv run python -m splice.install_hints`"
    )


def test_every_first_party_plugin_is_hinted_and_no_unregistered_tag_is() -> None:
    table = install_hints.load()
    hinted = {dist for tags in table.values() for dist in tags.values()}
    plugins = {p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file()}
    assert plugins <= hinted, f"plugins with no hinted tag: {sorted(plugins - hinted)}"
    assert "gqa" not in table.get("token_mixer", {})
    assert table["token_mixer"]["mha"] == "splice-mha"
    assert table["hf_architecture"]["llama"] == "splice-mha"
    assert "splice-core" not in hinted
