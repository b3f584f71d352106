"""The plugin registry: loads ``splice`` entry points and stores what they register.

Plugins are loaded one entry point at a time. A plugin that fails to import is
recorded (name, distribution, error) and the others still load, unless
``SPLICE_STRICT_PLUGINS=1``. ``SPLICE_DISABLE_PLUGINS=a,b`` skips entry points
by name. A tag registered twice for one kind is an error naming both
distributions. Factories may be lazy ``"module:attr"`` strings so that
``splice plugins`` never imports torch-heavy code.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from splice import hookspecs, install_advice

ENTRY_POINT_GROUP = "splice"

#: kind name -> hook that registers it.
KINDS: dict[str, str] = {
    "token_mixer": "register_token_mixers",
    "channel_mixer": "register_channel_mixers",
    "block": "register_blocks",
    "norm": "register_norms",
    "positional": "register_positional_encodings",
    "model": "register_models",
    "adapter": "register_adapters",
    "quantizer": "register_quantizers",
    "objective": "register_objectives",
    "regularizer": "register_regularizers",
    "connector": "register_connectors",
    "encoder": "register_encoders",
    "reward": "register_rewards",
    "preference_loss": "register_preference_losses",
    "advantage_estimator": "register_advantage_estimators",
    "policy_loss": "register_policy_losses",
    "retriever": "register_retrievers",
    "task": "register_tasks",
    "recipe": "register_recipes",
    "hf_architecture": "register_hf_architectures",
}

#: ``{kind: {tag: distribution}}`` for tags that are not built in (unknown-tag hints),
#: generated from what the first-party plugins register (see ``splice.install_advice``).
INSTALL_HINTS: dict[str, dict[str, str]] = install_advice.load()


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered something invalid."""


class DuplicateTagError(PluginError):
    """Two distributions registered the same tag for the same kind."""


class ComponentImportError(ImportError):
    """A registered component's ``"module:attr"`` factory could not be imported."""


class UnknownTagError(ValueError):
    """No component of this kind is registered under this tag."""


@dataclass(frozen=True)
class Registration:
    """One registered component: ``factory(config, ctx)`` builds it from ``config_cls``."""

    kind: str
    tag: str
    config_cls: Any
    factory: Callable[..., Any] | str
    plugin: str
    distribution: str

    def resolve_factory(self) -> Callable[..., Any]:
        """Import a lazy ``"module:attr"`` factory on first use.

        Raises:
            ComponentImportError: the module fails to import or lacks the attribute; the
                message names the kind, tag, plugin, distribution and module.
        """
        if not isinstance(self.factory, str):  # a callable, or an object such as a Recipe
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        where = (
            f"{self.kind} {self.tag!r} of plugin {self.plugin!r} ({self.distribution}): "
            f"its factory {self.factory!r}"
        )
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # any import-time error of the plugin's module
            raise ComponentImportError(
                f"{where} failed to import module {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise ComponentImportError(
                    f"{where}: module {module_name!r} has no attribute {attr!r}"
                ) from exc
        return obj  # type: ignore[no-any-return]


@dataclass
class PluginInfo:
    """What one entry point did when loaded."""

    name: str
    distribution: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


class Registry:
    """All components registered by loaded plugins, keyed by (kind, tag)."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("splice")
        self.pm.add_hookspecs(hookspecs)
        self._items: dict[tuple[str, str], Registration] = {}
        self.plugins: dict[str, PluginInfo] = {}
        #: entry points skipped because SPLICE_DISABLE_PLUGINS names them.
        self.disabled: list[str] = []
        self.loaded = False

    # -- loading ---------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every ``splice`` entry point, one at a time, isolating failures.

        Raises:
            PluginError: a plugin failed and ``SPLICE_STRICT_PLUGINS=1`` is set.
            DuplicateTagError: two distributions register the same tag for one kind
                (always: which one would win is not the user's choice to guess).
        """
        strict = os.environ.get("SPLICE_STRICT_PLUGINS", "") not in ("", "0")
        disabled = {
            n.strip() for n in os.environ.get("SPLICE_DISABLE_PLUGINS", "").split(",") if n.strip()
        }
        # core first, so a plugin that clashes with a built-in tag is the one reported.
        eps = sorted(
            entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != "core", e.name)
        )
        for ep in eps:
            if ep.name in disabled:
                if ep.name not in self.disabled:
                    self.disabled.append(ep.name)
                continue
            if ep.name in self.plugins:
                _check_same_distribution(self.plugins[ep.name], ep)
                continue
            self._load_one(ep, strict=strict)
        self.loaded = True

    def _load_one(self, ep: EntryPoint, *, strict: bool) -> None:
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "?"
        info = PluginInfo(name=ep.name, distribution=dist, version=version)
        self.plugins[ep.name] = info
        try:
            module = ep.load()
            self.register_plugin(module, name=ep.name, distribution=dist)
        except DuplicateTagError:
            del self.plugins[ep.name]
            raise
        except Exception as exc:
            info.error = _one_line(exc)
            if strict:
                raise PluginError(
                    f"plugin {ep.name!r} ({dist}) failed to load: {info.error}"
                ) from exc

    def register_plugin(self, module: Any, *, name: str, distribution: str = "local") -> None:
        """Register a plugin object (module or class with hookimpls) and run its hooks.

        Raises:
            PluginError: a hook implementation is misspelled or has the wrong signature
                (pluggy validation), or a registered config has no ``type`` tag.
            DuplicateTagError: a tag it registers is already registered for that kind.
        """
        created = name not in self.plugins
        info = self.plugins.setdefault(
            name, PluginInfo(name=name, distribution=distribution, version="local")
        )
        try:
            self._register_hooks(module, name=name, distribution=distribution, info=info)
        except Exception:
            if created:
                del self.plugins[name]
            raise

    def _register_hooks(
        self, module: Any, *, name: str, distribution: str, info: PluginInfo
    ) -> None:
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()  # a hookimpl whose name matches no hookspec (a typo)
        except pluggy.PluginValidationError as exc:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            raise PluginError(
                f"plugin {name!r} ({distribution}): {_explain_validation(exc)}"
            ) from exc
        added: list[tuple[str, str]] = []
        try:
            for kind, hook_name in KINDS.items():
                impls = [
                    i
                    for i in getattr(self.pm.hook, hook_name).get_hookimpls()
                    if i.plugin_name == name
                ]
                for impl in impls:
                    impl.function(register=self._registrar(kind, name, distribution, added))
        except Exception:
            for key in added:  # nothing half-registered
                self._items.pop(key, None)
            self.pm.unregister(name=name)
            raise
        for kind, tag in added:
            info.registered.setdefault(kind, []).append(tag)

    def _registrar(
        self, kind: str, plugin: str, distribution: str, added: list[tuple[str, str]]
    ) -> Callable[..., None]:
        def register(config_cls_or_name: Any, factory: Callable[..., Any] | str) -> None:
            if kind in ("recipe", "hf_architecture"):  # registered by name, no config class
                tag, config_cls = str(config_cls_or_name), None
            else:
                config_cls = config_cls_or_name
                tag = _tag_of(config_cls)
            key = (kind, tag)
            if key in self._items:
                other = self._items[key]
                raise DuplicateTagError(
                    f"{kind} tag {tag!r} is registered by both {other.distribution} "
                    f"(plugin {other.plugin!r}) and {distribution} (plugin {plugin!r}); "
                    f"uninstall one, or set SPLICE_DISABLE_PLUGINS={plugin}"
                )
            self._items[key] = Registration(kind, tag, config_cls, factory, plugin, distribution)
            added.append(key)

        return register

    # -- lookup ----------------------------------------------------------
    def ensure_loaded(self) -> None:
        if not self.loaded:
            self.load_entry_points()

    def get(self, kind: str, tag: str) -> Registration:
        """The registration for ``tag`` of ``kind``; raises UnknownTagError listing the known tags."""
        self.ensure_loaded()
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(KINDS)}")
        try:
            return self._items[(kind, tag)]
        except KeyError:
            raise UnknownTagError(self._unknown_tag_message(kind, tag)) from None

    def _unknown_tag_message(self, kind: str, tag: str) -> str:
        known = self.tags(kind)
        msg = f"unknown {kind} type {tag!r}; registered {kind} types: {known or 'none'}"
        close = difflib.get_close_matches(tag, known, n=1, cutoff=0.75)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        elsewhere = sorted(k for (k, t) in self._items if t == tag)
        if elsewhere:
            msg += f" ({tag!r} is registered as a {' and a '.join(elsewhere)}, not a {kind})"
        hint = INSTALL_HINTS.get(kind, {}).get(tag)
        if hint:
            msg += ". " + install_advice.install_advice(hint)
        else:
            msg += ". Is the plugin that provides it installed? (`splice plugins` lists them)"
        failed = [f"{i.name} ({i.error})" for i in self.plugins.values() if i.error]
        if failed:
            msg += f". Plugins that failed to load: {'; '.join(failed)}"
        if self.disabled:
            msg += f". Disabled by SPLICE_DISABLE_PLUGINS: {', '.join(self.disabled)}"
        return msg

    def tags(self, kind: str) -> list[str]:
        self.ensure_loaded()
        return sorted(t for (k, t) in self._items if k == kind)

    def registrations(self, kind: str) -> list[Registration]:
        self.ensure_loaded()
        return [self._items[(kind, t)] for t in self.tags(kind)]

    def build(self, kind: str, config: Any, ctx: Any = None) -> Any:
        """Build the component described by ``config`` (a registered config instance)."""
        reg = self.get(kind, _tag_of(type(config)))
        return reg.resolve_factory()(config, ctx)

    def unregister_plugin(self, name: str) -> None:
        """Remove everything one plugin registered (used by tests)."""
        for key in [k for k, r in self._items.items() if r.plugin == name]:
            del self._items[key]
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.plugins.pop(name, None)


def _check_same_distribution(loaded: PluginInfo, ep: EntryPoint) -> None:
    """Two distributions using one entry-point name would hide one of them: an error."""
    dist = ep.dist.name if ep.dist is not None else "unknown"
    if loaded.distribution not in (dist, "local"):
        raise DuplicateTagError(
            f"entry point name {ep.name!r} is used by both {loaded.distribution} and {dist}; "
            "uninstall one of them"
        )


def _one_line(exc: BaseException) -> str:
    """``"ErrorType: first line of the message"``, for a one-line load-error report."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _explain_validation(exc: pluggy.PluginValidationError) -> str:
    """pluggy's validation message on one line, with a "did you mean" for misspelled hooks."""
    text = " ".join(str(exc).split())
    unknown = text.partition("unknown hook '")[2].partition("'")[0]
    if unknown:
        close = difflib.get_close_matches(unknown, KINDS.values(), n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
    return text


def _tag_of(config_cls: Any) -> str:
    """The tag of a config class: the single value of its ``type: Literal[...]`` field."""
    fields = getattr(config_cls, "model_fields", None)
    if not fields or "type" not in fields:
        raise PluginError(f"{config_cls!r} has no `type: Literal['<tag>']` field")
    default = fields["type"].default
    if not isinstance(default, str):
        got = "no default" if fields["type"].is_required() else f"default {default!r}"
        raise PluginError(
            f"{config_cls.__name__}.type must default to its tag "
            f"(type: Literal['<tag>'] = '<tag>'), got {got}"
        )
    return default


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loading entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        registry.load_entry_points()  # may raise; then the next call tries again from scratch
        _REGISTRY = registry
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (tests, or after changing SPLICE_* variables)."""
    global _REGISTRY
    _REGISTRY = None
