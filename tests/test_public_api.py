"""Each package's public names, against a checked-in snapshot: a removal fails.

A module is public when no part of its dotted name starts with ``_``; its public names are
its ``__all__`` where it has one, else the classes, functions and constants it defines at
top level whose names do not start with ``_`` (read with ``ast``: no module is imported).
``tests/public_api/<distribution>.json`` holds them. The policy (docs/api-policy.md):

- adding a name or module is fine; refresh the snapshot with
  ``SPLICE_UPDATE_API=1 uv run pytest tests/test_public_api.py``;
- renaming or moving one keeps the old name as a deprecation alias
  (``splice.deprecation.alias_module`` for a module, ``deprecated_attribute`` for a name)
  for one minor version, which this test accepts;
- removing one without an alias is a breaking change: only in a new minor version (0.x) or
  major version (>= 1), recorded under "Removed" in the package's CHANGELOG.md, and then
  the snapshot is refreshed.
"""

from __future__ import annotations

import ast
import json
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "tests" / "public_api"
PACKAGES = sorted(
    p.parent
    for p in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins/*/pyproject.toml")]
)


def _distribution(package: Path) -> str:
    return tomllib.loads((package / "pyproject.toml").read_text())["project"]["name"]


def _literal_strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.List | ast.Tuple):
        return [
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return []


def _deprecated_names(tree: ast.Module) -> set[str]:
    """Names a ``__getattr__ = deprecated_attribute(module, {...})`` still serves."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "deprecated_attribute":
            for arg in node.args:
                if isinstance(arg, ast.Dict):
                    found |= {k.value for k in arg.keys if isinstance(k, ast.Constant)}
    return found


def _imported_names(tree: ast.Module) -> set[str]:
    """Names a module binds by import at top level: still importable from it after a move."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return found


def public_names(path: Path) -> tuple[list[str], set[str], bool]:
    """``(public names, names still served (deprecation aliases, imports), is a deprecation
    alias module)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    source = path.read_text(encoding="utf-8")
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id == "__all__" and node.value is not None:
                    served = _deprecated_names(tree) | _imported_names(tree)
                    return sorted(_literal_strings(node.value)), served, False
                if isinstance(t, ast.Name) and not t.id.startswith("_"):
                    names.append(t.id)
        elif isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
        ) and not node.name.startswith("_"):
            names.append(node.name)
    served = _deprecated_names(tree) | _imported_names(tree)
    return sorted(set(names)), served, "alias_module(__name__" in source


def api_of(package: Path) -> dict[str, list[str]]:
    """``{module: public names}`` of one package's public modules."""
    api = {}
    for src in sorted((package / "src").iterdir()):
        if not src.is_dir() or not (src / "__init__.py").is_file():
            continue
        for path in sorted(src.rglob("*.py")):
            parts = path.relative_to(src.parent).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts) or parts[-1] == "__main__":
                continue
            names, _, alias = public_names(path)
            api[".".join(parts)] = ["<deprecated alias>"] if alias else names
    return api


def _module_file(package: Path, module: str) -> Path | None:
    base = package / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("package", PACKAGES, ids=[p.name for p in PACKAGES])
def test_no_public_name_disappears_without_an_alias(package: Path) -> None:
    snapshot_file = SNAPSHOTS / f"{_distribution(package)}.json"
    current = api_of(package)
    if os.environ.get("SPLICE_UPDATE_API") == "1" or not snapshot_file.is_file():
        snapshot_file.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    snapshot = json.loads(snapshot_file.read_text())
    assert len(snapshot) >= 2, f"{snapshot_file.name}: too few modules; is the package found?"
    missing = []
    for module, names in snapshot.items():
        path = _module_file(package, module)
        if path is None:
            missing.append(f"module {module} (keep it as splice.deprecation.alias_module)")
            continue
        now, served, alias = public_names(path)
        if alias:
            continue  # the whole module is a deprecation alias of its new home
        gone = sorted(set(names) - set(now) - served - {"<deprecated alias>"})
        missing += [f"{module}.{name}" for name in gone]
    assert not missing, (
        f"{_distribution(package)}: public names removed without a deprecation alias:\n  "
        + "\n  ".join(missing)
        + "\nKeep each as an alias for one minor version (splice.deprecation), or, for a "
        "breaking release, list it under 'Removed' in the package's CHANGELOG.md and refresh "
        "the snapshot (SPLICE_UPDATE_API=1). Policy: docs/api-policy.md"
    )


def test_the_check_catches_a_removed_name(tmp_path: Path) -> None:
    """The check is not vacuous: a module that drops a snapshot name is reported."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    mod = tmp_path / "src" / "pkg" / "mod.py"
    mod.write_text("__all__ = ['kept', 'renamed']\nkept = renamed = 1\n")
    before = api_of(tmp_path)
    assert before["pkg.mod"] == ["kept", "renamed"]
    mod.write_text("__all__ = ['kept', 'new_name']\nkept = new_name = 1\n")
    assert set(before["pkg.mod"]) - set(public_names(mod)[0]) == {"renamed"}
    # ... unless the old name is still served, with a warning, by a deprecation alias.
    mod.write_text(
        "from splice.deprecation import deprecated_attribute\n"
        "__all__ = ['kept', 'new_name']\nkept = new_name = 1\n"
        "__getattr__ = deprecated_attribute('pkg.mod', {'renamed': ('new_name', lambda: 1)},"
        " removed_in='pkg 0.3.0')\n"
    )
    _, served, _ = public_names(mod)
    assert "renamed" in served


def test_every_package_has_a_changelog_naming_its_version() -> None:
    for package in PACKAGES:
        changelog = package / "CHANGELOG.md"
        assert changelog.is_file(), f"{package.name}: no CHANGELOG.md"
        version = tomllib.loads((package / "pyproject.toml").read_text())["project"]["version"]
        text = changelog.read_text()
        assert f"## [{version}]" in text, f"{changelog}: no section for version {version}"
        assert "## [Unreleased]" in text, f"{changelog}: no [Unreleased] section"
