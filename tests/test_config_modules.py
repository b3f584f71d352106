"""One naming scheme for config modules: every ``*Config`` class lives in a ``configs.py``.

A user looking for the fields of any component, core or plugin, opens ``<package>/configs.py``
(``splice.nn.configs``, ``splice.training.configs``, ``splice_lora.configs``, ...).
``splice/config.py`` is the config *system* (the base classes and the typed fields), not a
config module. Recipes are configs themselves and are exempt; objects with behaviour that
happen to validate like configs (``ChatTemplate``, which renders) keep their own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *ROOT.glob("packages/*/src"),
    *ROOT.glob("plugins/*/src"),
    ROOT / "tests/plugins/splice-example-ffn/src",
]
EXEMPT = {"splice/config.py"}
EXEMPT_PACKAGES = {"splice_recipes"}
CONFIG_BASES = {"SpliceConfig", "ComponentConfig", "BaseModel"}


def _config_classes(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
        is_config = bases & CONFIG_BASES or any(b.endswith("Config") for b in bases)
        if is_config and node.name.endswith("Config"):
            found.append(node.name)
    return found


def test_every_config_class_lives_in_a_configs_module() -> None:
    misplaced = []
    checked = 0
    for src in SOURCES:
        for path in src.rglob("*.py"):
            rel = path.relative_to(src).as_posix()
            if rel in EXEMPT or rel.split("/")[0] in EXEMPT_PACKAGES:
                continue
            classes = _config_classes(path)
            checked += len(classes)
            if classes and path.name != "configs.py":
                misplaced.append(f"{rel}: {', '.join(classes)}")
    assert checked > 50, f"scanned only {checked} config classes: is SOURCES right?"
    assert not misplaced, "config classes outside a configs.py module:\n" + "\n".join(misplaced)


def _is_deprecation_alias(path: Path) -> bool:
    """A ``config.py`` kept for one minor version as an alias of the renamed ``configs.py``."""
    return "alias_module(__name__" in path.read_text()


def test_no_module_is_named_config_singular() -> None:
    singular = [
        p.relative_to(ROOT).as_posix()
        for src in SOURCES
        for p in src.rglob("config.py")
        if p.relative_to(src).as_posix() not in EXEMPT and not _is_deprecation_alias(p)
    ]
    assert not singular, f"rename to configs.py: {singular}"
