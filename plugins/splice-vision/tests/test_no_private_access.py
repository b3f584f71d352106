"""splice-vision uses the core's and splice-mha's public API only (``split_heads``,
``residual_dropout``, ...): no ``obj._private`` access on another package's objects."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "splice_vision"


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef)}
    own |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets
            if isinstance(t, ast.Name)}  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or (isinstance(node.value, ast.Name) and (
            node.value.id in ("self", "cls") or node.value.id in own
        )):  # fmt: skip
            continue  # dunders, and this module's own objects
        found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    return found


def test_no_private_attribute_of_another_package_is_read() -> None:
    uses = [u for path in sorted(SRC.rglob("*.py")) for u in _private_uses(path)]
    assert not uses, "private attributes read across packages:\n" + "\n".join(uses)


def test_the_scan_sees_a_private_access(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(mix, x):\n    return mix._heads(x, 2)\n")
    assert _private_uses(bad) == ["bad.py:2: ._heads"]
