"""Renamed public modules keep working for one minor version, with a DeprecationWarning.

The policy is docs/api-policy.md. Each alias below must warn, name its replacement, and be
the very same module object as the new one (so ``isinstance`` and config classes agree).
A third-party plugin written against the 0.1.0-era docs (``splice.training.config``,
``splice_mha.config``) still imports, registers and builds.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from splice.registry import get_registry

ALIASES = {
    "splice.training.config": "splice.training.configs",
    "splice.data.task_configs": "splice.data.configs",
    "splice.models.encoder_decoder_config": "splice.models.configs",
    "splice.hf.llama": "splice_mha.hf.llama",
    "splice.hf.gpt2": "splice_mha.hf.gpt2",
    **{
        f"splice_{p}.config": f"splice_{p}.configs"
        for p in ("dpo", "forgetting", "grpo", "lora", "mha", "moe", "ppo", "qlora", "vision")
    },
}


def _fresh_import(name: str) -> object:
    sys.modules.pop(name, None)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules and hasattr(sys.modules[parent], child):
        delattr(sys.modules[parent], child)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_alias_warns_and_is_the_new_module(old: str) -> None:
    new = ALIASES[old]
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .* use {new} instead"):
        module = _fresh_import(old)
    assert module is importlib.import_module(new)
    # The warning points at the importing line, not at the import machinery.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fresh_import(old)
    assert caught and caught[0].filename == __file__


def test_removed_architectures_dict_warns_and_lists_the_plugin_layouts() -> None:
    import splice.hf

    with pytest.warns(DeprecationWarning, match=r"splice\.hf\.all_architectures\(\)"):
        found = splice.hf.ARCHITECTURES
    assert {"llama", "qwen2", "gpt2"} <= set(found)
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        splice.hf.NOPE  # noqa: B018


# A plugin as the docs before the configs.py rename taught it: a ``config.py`` importing
# splice's config modules by their old names, a recipe composing it with splice-mha.
OLD_STYLE_CONFIG = """
from typing import Literal

from splice.config import ComponentConfig
from splice.training.config import ExperimentConfig, TrainConfig  # renamed: configs
from splice_mha.config import MHAConfig  # renamed: configs


class OldReLU2Config(ComponentConfig):
    type: Literal["old_relu2"] = "old_relu2"
    multiple: float = 2.0
"""
OLD_STYLE_PLUGIN = """
import torch
from torch import nn
from splice.hookspecs import hookimpl

from splice_oldstyle.config import OldReLU2Config


class OldReLU2(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)) ** 2)


def build(config, ctx):
    return OldReLU2(ctx.d_model, int(config.multiple * ctx.d_model))


@hookimpl
def register_channel_mixers(register):
    register(OldReLU2Config, build)
"""


def test_third_party_plugin_written_against_the_previous_docs_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "splice_oldstyle"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(textwrap.dedent(OLD_STYLE_CONFIG))
    (pkg / "plugin.py").write_text(textwrap.dedent(OLD_STYLE_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("splice.training.config", "splice_mha.config"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.warns(DeprecationWarning) as record:
        plugin = importlib.import_module("splice_oldstyle.plugin")
    warned = {str(w.message).split()[0] for w in record}
    assert {"splice.training.config", "splice_mha.config"} <= warned
    assert all(w.filename == str(pkg / "config.py") for w in record)

    old = sys.modules["splice_oldstyle.config"]
    from splice.models.build import build_model
    from splice.models.configs import DecoderConfig
    from splice_mha.configs import MHAConfig

    assert old.MHAConfig is MHAConfig
    reg = get_registry()
    reg.register_plugin(plugin, name="oldstyle", distribution="splice-oldstyle")
    try:
        cfg = DecoderConfig.model_validate(
            {
                "vocab_size": 32,
                "d_model": 16,
                "n_layers": 1,
                "block": {
                    "type": "pre_norm",
                    "token_mixer": old.MHAConfig(n_heads=2),
                    "channel_mixer": {"type": "old_relu2"},
                },
            }
        )
        assert old.TrainConfig is importlib.import_module("splice.training.configs").TrainConfig
        torch.manual_seed(0)
        model = build_model(cfg)
        logits = model(torch.randint(0, 32, (2, 5))).logits
        assert logits.shape == (2, 5, 32) and torch.isfinite(logits).all()
    finally:
        reg.unregister_plugin("oldstyle")
