"""``splice plugins`` in-process: text and JSON listings, and a load error as exit code 1."""

from __future__ import annotations

import json

import pytest
from splice import registry
from splice.cli import main
from splice.registry import DuplicateTagError, Registry


@pytest.mark.mha
def test_lists_core_and_mha_with_versions_and_tags(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "splice-core 0.1.0 (entry point 'core')"
    assert "  channel_mixer: mlp, swiglu" in lines
    mha = lines.index("splice-mha 0.1.0 (entry point 'mha')")
    assert lines[mha + 1 : mha + 3] == [
        "  hf_architecture: gpt2, llama, qwen2",
        "  token_mixer: cross_attention, mha, mla",
    ]


@pytest.mark.mha
def test_json_listing_matches_the_registry(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in listing["plugins"]}
    reg = registry.get_registry()
    assert set(rows) == set(reg.plugins)
    assert rows["core"]["distribution"] == "splice-core"
    assert rows["mha"]["registered"]["token_mixer"] == ["cross_attention", "mha", "mla"]
    assert all(row["error"] is None for row in rows.values())
    assert listing["disabled"] == []


def test_failed_plugin_is_one_line(capsys, monkeypatch):
    reg = Registry()
    reg.loaded = True
    info = registry.PluginInfo("broken", "splice-broken", "0.0.1", error="ImportError: no cuda")
    reg.plugins["broken"] = info
    monkeypatch.setattr(registry, "_REGISTRY", reg)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert (
        out == "splice-broken 0.0.1 (entry point 'broken'): FAILED to load: ImportError: no cuda\n"
    )


def test_load_error_exits_1_with_the_message(capsys, monkeypatch):
    def clash() -> Registry:
        raise DuplicateTagError("channel_mixer tag 'x' is registered by both a and b")

    monkeypatch.setattr(registry, "get_registry", clash)
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err
    assert err == "splice plugins: error: channel_mixer tag 'x' is registered by both a and b\n"


def test_help_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "plugins" in capsys.readouterr().out
