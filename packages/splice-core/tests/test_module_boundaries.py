"""Module boundaries of the whole workspace, read from the source (no imports run).

* No import cycle among the core's modules: every import counts (module level or inside a
  function, the usual way to dodge a cycle), except those under ``if TYPE_CHECKING:``.
* No module reads another module's private names: no ``from splice.x import _name``, no
  ``module._name`` on an imported first-party module, and no ``obj._name`` where
  ``_name`` is a private attribute that only *another* first-party module defines.
  Private names of third-party libraries (torch's ``_modules``) are out of scope here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCES = sorted([*ROOT.glob("packages/*/src"), *ROOT.glob("plugins/*/src")])
FIRST_PARTY = ("splice", "splice_")

# Known reads owned by other open work, as "path:name"; remove an entry when its read is
# gone (a test fails while an entry names a read that no longer happens).
KNOWN: set[str] = set()


def modules(src: Path) -> dict[str, Path]:
    """``dotted name -> file`` of every module under one ``src`` folder."""
    out = {}
    for f in src.rglob("*.py"):
        parts = list(f.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


ALL = {name: f for src in SOURCES for name, f in modules(src).items()}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest module prefix of ``name`` (``splice.a.b.func`` -> ``splice.a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def core_import_graph() -> dict[str, set[str]]:
    core = modules(ROOT / "packages/splice-core/src")
    graph: dict[str, set[str]] = {}
    for mod, path in core.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(r for a in node.names if (r := _resolve(a.name, core)))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    if r := _resolve(f"{node.module}.{a.name}", core):
                        deps.add(r)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Cycles owned by other open work, each a sorted list of modules; remove an entry when it
# is gone.
KNOWN_CYCLES: list[list[str]] = []


def test_the_core_has_no_import_cycle():
    assert [c for c in cycles(core_import_graph()) if c not in KNOWN_CYCLES] == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def defined_privates(path: Path) -> set[str]:
    """Private names a module defines: functions, classes, assignments, ``self._x = ...``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if _private(n)}


def private_reads(path: Path, owners: dict[str, set[str]]) -> Iterator[str]:
    """``"line: what"`` for each read of another first-party module's private name.

    ``owners`` maps a private name to the files (as strings) that define it.
    """
    tree = ast.parse(path.read_text())
    own = defined_privates(path)
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(FIRST_PARTY):
                    module_aliases.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(FIRST_PARTY):
            for a in node.names:
                if _private(a.name):
                    yield f"{node.lineno}: from {node.module} import {a.name}"
                elif f"{node.module}.{a.name}" in ALL:  # a module imported by name
                    module_aliases.add(a.asname or a.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls"):
            continue
        if isinstance(base, ast.Call) and ast.unparse(base.func) == "super":
            continue
        root = base
        while isinstance(root, ast.Attribute):
            root = root.value
        on_module = isinstance(root, ast.Name) and root.id in module_aliases
        foreign = node.attr in owners and node.attr not in own
        if on_module or foreign:
            yield f"{node.lineno}: {ast.unparse(node)}"


def all_private_reads() -> dict[str, list[str]]:
    owners: dict[str, set[str]] = {}
    for path in ALL.values():
        for name in defined_privates(path):
            owners.setdefault(name, set()).add(str(path))
    found = {}
    for path in sorted(set(ALL.values())):
        rel = str(path.relative_to(ROOT))
        reads = sorted(
            (r for r in private_reads(path, owners) if f"{rel}:{_name(r)}" not in KNOWN),
            key=lambda r: int(r.split(":")[0]),
        )
        if reads:
            found[rel] = reads
    return found


def _name(read: str) -> str:
    return read.rsplit(".", 1)[-1].rsplit(" ", 1)[-1]


def test_no_module_reads_another_modules_private_names():
    assert all_private_reads() == {}


def test_every_known_exception_still_happens():
    """A known read or cycle that is gone must leave the lists, so it cannot come back
    unnoticed."""
    owners: dict[str, set[str]] = {}
    for path in ALL.values():
        for name in defined_privates(path):
            owners.setdefault(name, set()).add(str(path))
    happening = {
        f"{path.relative_to(ROOT)}:{_name(read)}"
        for path in set(ALL.values())
        for read in private_reads(path, owners)
    }
    assert sorted(KNOWN - happening) == []
    found = cycles(core_import_graph())
    assert [c for c in KNOWN_CYCLES if c not in found] == []


def test_the_scan_catches_planted_private_reads(tmp_path):
    owner = tmp_path / "owner.py"
    owner.write_text("class Trainer:\n    def __init__(self):\n        self._pending = []\n")
    reader = tmp_path / "reader.py"
    reader.write_text(
        "from splice.training.trainer import _Pending\n"
        "import splice.training.trainer as tr\n"
        "def f(trainer):\n"
        "    trainer._pending.append(1)\n"
        "    tr._hidden()\n"
        "    trainer._own = 1\n"  # defined here: its own name
        "    return trainer._own, torch_module._modules\n"
    )
    owners = {n: {str(owner)} for n in defined_privates(owner)}
    reads = sorted(private_reads(reader, owners), key=lambda r: int(r.split(":")[0]))
    assert reads == [
        "1: from splice.training.trainer import _Pending",
        "4: trainer._pending",
        "5: tr._hidden",
    ]
