"""The plugin registry in-process: hooks, lazy factories, failures, duplicates, unknown tags.

Entry points are faked with ``importlib.metadata.EntryPoint`` objects pointing at modules
written to ``tmp_path``; the real-installation versions of these checks live in the
top-level ``tests/test_broken_plugin.py``.
"""

from __future__ import annotations

import inspect
import math
import sys
import types
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as real_entry_points
from pathlib import Path
from typing import Any, Literal

import pytest
from splice import hookspecs, registry
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import (
    KINDS,
    DuplicateTagError,
    PluginError,
    Registry,
    UnknownTagError,
    get_registry,
)


class GeGLUConfig(ComponentConfig):
    type: Literal["geglu"] = "geglu"


def _module(name: str, **hooks: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, fn in hooks.items():
        setattr(module, attr, fn)
    return module


def _geglu_plugin(factory: Any = "math:sqrt") -> types.ModuleType:
    @hookimpl
    def register_channel_mixers(register: Any) -> None:
        register(GeGLUConfig, factory)

    return _module("geglu_plugin", register_channel_mixers=register_channel_mixers)


@pytest.fixture
def fake_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``fake_entry_points({"name": "module source", ...})``: the ``splice`` group becomes these.

    The real ``core`` entry point stays, so built-in tags (and splice-core's name) are there.
    """

    def install(sources: dict[str, str]) -> None:
        eps = [
            ep for ep in real_entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name == "core"
        ]
        for name, source in sources.items():
            module = f"fake_splice_plugin_{name}"
            (tmp_path / f"{module}.py").write_text(source)
            eps.append(EntryPoint(name, module, registry.ENTRY_POINT_GROUP))
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setattr(registry, "entry_points", lambda group: eps)
        for name in sources:
            sys.modules.pop(f"fake_splice_plugin_{name}", None)

    monkeypatch.delenv("SPLICE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("SPLICE_DISABLE_PLUGINS", raising=False)
    return install


GOOD = """
from typing import Any, Literal
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl

class GeGLUConfig(ComponentConfig):
    type: Literal["geglu"] = "geglu"

@hookimpl
def register_channel_mixers(register: Any) -> None:
    register(GeGLUConfig, "math:sqrt")
"""
BROKEN = "raise ImportError('needs flash_attn\\nsecond line')\n"


def test_every_hookspec_has_a_kind_and_every_kind_a_hookspec():
    specs = {name for name, fn in inspect.getmembers(hookspecs) if hasattr(fn, "splice_spec")}
    assert specs == set(KINDS.values())


def test_builtins_are_registered_through_the_same_hooks():
    reg = get_registry()
    assert reg.plugins["core"].distribution == "splice-core"
    assert reg.plugins["core"].error is None
    assert {"mlp", "swiglu"} <= set(reg.tags("channel_mixer"))
    assert reg.get("model", "decoder").plugin == "core"


def test_register_plugin_records_tags_and_resolves_lazy_factories():
    reg = Registry()
    reg.loaded = True
    reg.register_plugin(_geglu_plugin(), name="geglu", distribution="splice-geglu")
    assert reg.tags("channel_mixer") == ["geglu"]
    assert reg.plugins["geglu"].registered == {"channel_mixer": ["geglu"]}
    registration = reg.get("channel_mixer", "geglu")
    assert registration.distribution == "splice-geglu"
    assert registration.factory == "math:sqrt"  # stays a string until first use
    assert registration.resolve_factory() is math.sqrt


def test_build_calls_the_factory_with_config_and_context():
    calls = []
    reg = Registry()
    reg.loaded = True
    reg.register_plugin(
        _geglu_plugin(lambda cfg, ctx: calls.append((cfg, ctx)) or "built"), name="g"
    )
    assert reg.build("channel_mixer", GeGLUConfig(), ctx="ctx") == "built"
    assert calls == [(GeGLUConfig(), "ctx")]


def test_failing_plugin_is_reported_and_the_rest_load(fake_entry_points):
    fake_entry_points({"broken": BROKEN, "good": GOOD})
    reg = Registry()
    reg.load_entry_points()
    assert reg.plugins["broken"].error == "ImportError: needs flash_attn"
    assert reg.plugins["good"].error is None
    assert reg.plugins["good"].registered == {"channel_mixer": ["geglu"]}
    assert "mlp" in reg.tags("channel_mixer")


def test_strict_mode_reraises(fake_entry_points, monkeypatch):
    fake_entry_points({"broken": BROKEN, "good": GOOD})
    monkeypatch.setenv("SPLICE_STRICT_PLUGINS", "1")
    with pytest.raises(
        PluginError, match=r"plugin 'broken' .* failed to load: ImportError"
    ) as info:
        Registry().load_entry_points()
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.parametrize("value", ["", "0"])
def test_strict_mode_off_values(fake_entry_points, monkeypatch, value):
    fake_entry_points({"broken": BROKEN})
    monkeypatch.setenv("SPLICE_STRICT_PLUGINS", value)
    reg = Registry()
    reg.load_entry_points()
    assert reg.plugins["broken"].error is not None


def test_disabled_plugins_are_skipped_and_recorded(fake_entry_points, monkeypatch):
    fake_entry_points({"broken": BROKEN, "good": GOOD})
    monkeypatch.setenv("SPLICE_DISABLE_PLUGINS", " broken ,good")
    reg = Registry()
    reg.load_entry_points()
    assert sorted(reg.plugins) == ["core"]
    assert reg.disabled == ["broken", "good"]
    assert "fake_splice_plugin_broken" not in sys.modules
    with pytest.raises(UnknownTagError, match="Disabled by SPLICE_DISABLE_PLUGINS: broken, good"):
        reg.get("channel_mixer", "geglu")


def test_duplicate_tag_raises_naming_both_distributions():
    reg = Registry()
    reg.loaded = True
    reg.register_plugin(_geglu_plugin(), name="first", distribution="splice-first")
    with pytest.raises(DuplicateTagError) as info:
        reg.register_plugin(_geglu_plugin(), name="second", distribution="splice-second")
    message = str(info.value)
    assert "channel_mixer tag 'geglu' is registered by both splice-first" in message
    assert "and splice-second (plugin 'second')" in message
    # nothing of the second plugin stays behind
    assert "second" not in reg.plugins
    assert reg.get("channel_mixer", "geglu").distribution == "splice-first"


def test_duplicate_of_a_builtin_raises_even_when_not_strict(fake_entry_points):
    fake_entry_points({"clash": GOOD.replace('"geglu"', '"mlp"')})
    with pytest.raises(DuplicateTagError, match="'mlp' is registered by both splice-core"):
        Registry().load_entry_points()


def test_two_distributions_with_one_entry_point_name_is_an_error(monkeypatch):
    """Otherwise the second distribution's components would silently be missing."""

    def entry_point(dist: str) -> Any:
        # The attributes the registry reads from an importlib.metadata.EntryPoint.
        return types.SimpleNamespace(
            name="same", dist=types.SimpleNamespace(name=dist, version="1.0"), load=lambda: math
        )

    points = [entry_point("splice-a"), entry_point("splice-b")]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)
    with pytest.raises(DuplicateTagError, match="'same' is used by both splice-a and splice-b"):
        Registry().load_entry_points()


def test_misspelled_hookimpl_is_caught():
    @hookimpl
    def register_token_mixer(register: Any) -> None:  # missing "s"
        raise AssertionError("never called")

    reg = Registry()
    reg.loaded = True
    plugin = _module("typo", register_token_mixer=register_token_mixer)
    with pytest.raises(PluginError, match="unknown hook 'register_token_mixer'") as info:
        reg.register_plugin(plugin, name="typo")
    assert "did you mean 'register_token_mixers'?" in str(info.value)
    assert "typo" not in reg.plugins
    assert not reg.pm.has_plugin("typo")


def test_hookimpl_with_wrong_argument_name_is_caught():
    @hookimpl
    def register_norms(reg: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(PluginError, match=r"Argument\(s\) \{'reg'\} are declared in the hookimpl"):
        Registry().register_plugin(_module("bad", register_norms=register_norms), name="bad")


def test_config_without_type_literal_is_rejected():
    class NoTag(ComponentConfig):
        pass

    @hookimpl
    def register_norms(register: Any) -> None:
        register(NoTag, "math:sqrt")

    reg = Registry()
    with pytest.raises(PluginError, match="type must default to its tag") as info:
        reg.register_plugin(_module("notag", register_norms=register_norms), name="notag")
    assert "got no default" in str(info.value)
    assert "PydanticUndefined" not in str(info.value)


def test_failing_hook_registers_nothing_half_way():
    @hookimpl
    def register_channel_mixers(register: Any) -> None:
        register(GeGLUConfig, "math:sqrt")
        raise RuntimeError("bug after the first registration")

    reg = Registry()
    reg.loaded = True
    with pytest.raises(RuntimeError, match="bug after"):
        reg.register_plugin(
            _module("half", register_channel_mixers=register_channel_mixers), name="h"
        )
    assert reg.tags("channel_mixer") == []
    assert "h" not in reg.plugins


def test_unknown_tag_lists_registered_tags_and_install_hint(monkeypatch):
    # A hinted tag whose plugin is not installed (the real plugins all are, in the workspace).
    monkeypatch.setitem(registry.INSTALL_HINTS, "adapter", {"hologram": "splice-hologram"})
    reg = get_registry()
    with pytest.raises(UnknownTagError) as info:
        reg.get("adapter", "hologram")
    message = str(info.value)
    assert "unknown adapter type 'hologram'" in message
    assert "registered adapter types:" in message
    # Nothing is published on an index: the advice is the wheels path that works.
    assert "`uv add --find-links wheels splice-hologram`" in message
    assert "uv build --all-packages --wheel -o wheels" in message


def test_install_hint_for_mha_when_splice_mha_is_absent(monkeypatch):
    """The hint comes from the checked-in table (generated from the plugins' registrations),
    so it names splice-mha even where splice-mha is not installed (the core session)."""
    monkeypatch.setenv("SPLICE_DISABLE_PLUGINS", "mha")
    reg = registry.Registry()
    reg.load_entry_points()
    with pytest.raises(UnknownTagError, match=r"--find-links wheels splice-mha`"):
        reg.get("token_mixer", "mha")
    with pytest.raises(UnknownTagError) as info:
        reg.get("token_mixer", "gqa")  # nothing registers it: no distribution is guessed
    assert "splice-mha" not in str(info.value)


def test_unknown_tag_suggests_a_near_miss():
    with pytest.raises(UnknownTagError, match=r"did you mean 'rmsnorm'\?"):
        get_registry().get("norm", "rms_norm")
    with pytest.raises(UnknownTagError) as info:
        get_registry().get("norm", "batchnorm")
    assert "did you mean" not in str(info.value)


@pytest.mark.mha
def test_unknown_tag_says_when_the_tag_belongs_to_another_kind():
    with pytest.raises(
        UnknownTagError, match=r"'mha' is registered as a token_mixer, not a channel_mixer"
    ):
        get_registry().get("channel_mixer", "mha")


def test_unknown_tag_without_hint_points_at_splice_plugins():
    with pytest.raises(UnknownTagError, match="`splice plugins` lists them"):
        get_registry().get("norm", "batchnorm")


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="unknown component kind 'mixer'"):
        get_registry().get("mixer", "mlp")


def test_get_registry_retries_after_a_failed_load(monkeypatch):
    calls = []

    def boom(self: Registry) -> None:
        calls.append(1)
        raise DuplicateTagError("clash")

    monkeypatch.setattr(registry, "_REGISTRY", None)
    monkeypatch.setattr(Registry, "load_entry_points", boom)
    for _ in range(2):
        with pytest.raises(DuplicateTagError):
            get_registry()
    assert len(calls) == 2  # a half-loaded registry is never cached
