"""Errors a plugin author meets name the plugin, the tag and the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.recipe import Recipe
from splice.registry import ComponentImportError, get_registry


class LazyConfig(ComponentConfig):
    type: Literal["test_lazy_ffn"] = "test_lazy_ffn"


def _dict_config() -> Any:
    return {"name": "from-a-dict"}


def _noop_run(config: Any) -> dict[str, Any]:
    return {}


class _Plugin:
    @staticmethod
    @hookimpl
    def register_channel_mixers(register: Any) -> None:
        register(LazyConfig, "splice_test_missing_module.ffn:build")

    @staticmethod
    @hookimpl
    def register_rewards(register: Any) -> None:
        register(LazyConfig, "splice.registry:no_such_factory")

    @staticmethod
    @hookimpl
    def register_recipes(register: Any) -> None:
        register("test-dict-recipe", Recipe("test-dict-recipe", "", _dict_config, _noop_run))


@pytest.fixture
def plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="lazy", distribution="splice-lazy")
    yield
    reg.unregister_plugin("lazy")


def test_a_component_module_failing_to_import_names_plugin_tag_and_module(plugin: None) -> None:
    with pytest.raises(ComponentImportError) as info:
        get_registry().build("channel_mixer", LazyConfig(), None)
    message = str(info.value)
    for part in (
        "channel_mixer 'test_lazy_ffn'",
        "plugin 'lazy'",
        "splice-lazy",
        "module 'splice_test_missing_module.ffn'",
        "ModuleNotFoundError",
    ):
        assert part in message, f"{part!r} not in {message!r}"
    assert isinstance(info.value, ImportError)  # callers catching ImportError still do


def test_a_missing_factory_attribute_names_it(plugin: None) -> None:
    with pytest.raises(ComponentImportError, match=r"reward 'test_lazy_ffn' of plugin 'lazy'.*"
                       r"module 'splice.registry' has no attribute 'no_such_factory'"):  # fmt: skip
        get_registry().build("reward", LazyConfig(), None)


def test_a_recipe_whose_config_returns_a_dict_names_the_recipe(plugin: None) -> None:
    from splice.cli.run import load_recipe

    recipe = load_recipe("test-dict-recipe")
    with pytest.raises(ValueError, match=r"recipe 'test-dict-recipe' of plugin 'lazy' \(splice-lazy"
                       r".*config\(\) returned dict, expected a pydantic config"):  # fmt: skip
        recipe.config()


def test_a_recipe_file_returning_a_dict_is_validated_as_an_experiment(tmp_path: Path) -> None:
    """A config() dict of a recipe the standard trainer runs is an ExperimentConfig: its
    fields are validated (and named), not read as attributes of a dict."""
    from pydantic import ValidationError
    from splice.cli.run import load_recipe

    path = tmp_path / "my_recipe.py"
    path.write_text("def config():\n    return {'name': 'x', 'train': {'stpes': 3}}\n")
    with pytest.raises(ValidationError, match=r"ExperimentConfig(.|\n)*train\.stpes"):
        load_recipe(str(path)).config()
