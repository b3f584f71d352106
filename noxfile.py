"""Sessions: lint, typecheck, tests, core (splice-core alone), isolated (one plugin alone),
bench, docs.

``uvx nox`` runs the defaults (lint, tests); ``uvx nox -s isolated`` the per-plugin runs.
Every environment is synced from ``uv.lock`` with ``--locked``: a stale lock fails fast.
Extra arguments after ``--`` go to the tool (e.g. ``uvx nox -s tests -- -k registry``).
"""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # uv backend with run_install("uv", ...), parametrize ids
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "tests_bf16", "core", "wheels"]
nox.options.reuse_venv = "yes"  # uv sync makes a reused env exactly the lock's again
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PYTHON = "3.11"
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
TEST_DIRS = sorted(
    str(p.relative_to(ROOT))
    for p in [*ROOT.glob("packages/*/tests"), *ROOT.glob("plugins/*/tests"), ROOT / "tests"]
    if p.is_dir()
)


def sync(session: nox.Session, *args: str) -> None:
    """``uv sync --locked`` into this session's virtualenv (not the repo's ``.venv``).

    ``--compile-bytecode``: test processes (and the torchrun/CLI subprocesses they start)
    then never compile torch from source, even where PYTHONDONTWRITEBYTECODE is set.
    """
    env = {"UV_PROJECT_ENVIRONMENT": str(session.virtualenv.location)}
    session.run_install("uv", "sync", "--locked", "--compile-bytecode", *args, env=env)


def own_compile_cache(session: nox.Session) -> None:
    """Give torch.compile a cache inside this session's virtualenv.

    The default (``/tmp/torchinductor_<user>``) is shared by every process of the machine's
    user; one left half-written by a killed or concurrent process aborted the compile tests.
    A per-session cache makes a test run depend on nothing the machine kept.
    """
    session.env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(session.virtualenv.location) / "inductor")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on splice-core's sources."""
    sync(session, "--no-default-groups", "--group", "lint", "--group", "test")
    session.run("mypy", "--strict", "packages/splice-core/src", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every package's and plugin's tests plus the cross-package tests in tests/."""
    sync(session, "--no-default-groups", "--group", "test", "--group", "peers")
    own_compile_cache(session)
    session.run("pytest", *(session.posargs or TEST_DIRS))


@nox.session(python=PYTHON)
def tests_bf16(session: nox.Session) -> None:
    """The precision-sensitive tests (marker ``bf16_pass``) again with bf16 forced.

    ``SPLICE_AUTO_PRECISION=bf16`` makes ``precision="auto"`` resolve to bf16 for every model,
    so a machine whose ``auto`` picks float32 (an AVX2 CPU, or any tiny model) still catches
    what a machine with native bf16 and a wide model would hit: a test that checks float32
    arithmetic without pinning ``precision="float32"``, or bf16 numerics that break a claim.
    """
    sync(session, "--no-default-groups", "--group", "test", "--group", "peers")
    own_compile_cache(session)
    env = {"SPLICE_AUTO_PRECISION": "bf16"}
    session.run("pytest", "-m", "bf16_pass", *(session.posargs or TEST_DIRS), env=env)


@nox.session(python=PYTHON)
@nox.parametrize("plugin", PLUGINS, ids=PLUGINS)
def isolated(session: nox.Session, plugin: str) -> None:
    """One plugin alone: splice-core, the plugin, its declared dependencies, and pytest.

    Proves "install only the plugins you need": the env holds no splice distribution the
    plugin does not declare (checked below), so a hidden import of another plugin fails
    here. A plugin whose tests need more declares them in its own ``test`` dependency group.
    """
    groups = _dependency_groups(plugin)
    sync(session, "--package", plugin, "--no-default-groups", *groups)
    _install_test_tools(session)
    session.run("python", "-c", _ONLY_THESE_PLUGINS, *_declared_splice_packages(plugin))
    session.run("pytest", f"plugins/{plugin}/tests", *session.posargs)


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """splice-core alone, no plugin installed: the core's tests that need nothing else.

    Proves the core does not lean on a plugin it does not declare (attention is
    splice-mha's). A core test that needs splice-mha says so with ``@pytest.mark.mha``
    and is deselected here (the ``tests`` session runs it); one that does not say so
    fails here.
    """
    sync(session, "--package", "splice-core", "--no-default-groups")
    own_compile_cache(session)
    _install_test_tools(session)
    session.run("python", "-c", _ONLY_THESE_PLUGINS, "splice-core")
    session.run("pytest", "packages/splice-core/tests", "-m", "not mha", *session.posargs)


def _install_test_tools(session: nox.Session) -> None:
    """pytest and its plugins at the versions the lock pins (the root ``test`` group)."""
    pins = Path(session.create_tmp()) / "test-requirements.txt"
    session.run_install(
        "uv", "export", "--locked", "--only-group", "test", "--no-hashes", "--no-emit-workspace",
        "--quiet", "-o", str(pins), silent=True,
    )  # fmt: skip
    session.install("-r", str(pins))


def _pyproject(plugin: str) -> dict:  # type: ignore[type-arg]
    with open(ROOT / "plugins" / plugin / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _dependency_groups(plugin: str) -> list[str]:
    """``["--group", "test"]`` if the plugin declares a ``test`` dependency group."""
    return ["--group", "test"] if "test" in _pyproject(plugin).get("dependency-groups", {}) else []


def _declared_splice_packages(plugin: str) -> list[str]:
    """splice-core, the plugin, and splice packages in its dependencies or test group."""
    data = _pyproject(plugin)
    requirements = [*data["project"].get("dependencies", [])]
    requirements += data.get("dependency-groups", {}).get("test", [])
    names = {
        re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in requirements if isinstance(r, str)
    }
    return sorted({"splice-core", plugin} | {n for n in names if n.startswith("splice-")})


_ONLY_THESE_PLUGINS = """
import sys
from importlib.metadata import distributions
found = {d.metadata["Name"] for d in distributions() if any(e.group == "splice" for e in d.entry_points)}
wanted = set(sys.argv[1:])
assert found == wanted, f"expected exactly {sorted(wanted)} installed, found {sorted(found)}"
print("splice distributions installed:", ", ".join(sorted(found)))
"""


@nox.session(python=PYTHON)
def wheels(session: nox.Session) -> None:
    """Every package builds a wheel; core + splice-mha + the example plugin install from
    wheels alone (no repository sources, nothing editable) and train a few steps."""
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    if dist.exists():
        shutil.rmtree(dist)
    session.run_install("uv", "build", "--all-packages", "--wheel", "-q", "-o", str(dist))
    session.run_install(
        "uv", "build", "--wheel", "-q", "-o", str(dist), "tests/plugins/splice-example-ffn"
    )
    built = sorted(p.name.split("-")[0] for p in dist.glob("*.whl"))
    expected = sorted(
        ["splice_core", "splice_recipes", "splice_example_ffn"]
        + [p.replace("-", "_") for p in PLUGINS]
    )
    if built != expected:
        session.error(f"wheels built: {built}; expected one per package: {expected}")
    pins = tmp / "constraints.txt"  # third-party versions exactly as locked (uv's cache has them)
    session.run_install(
        "uv", "export", "--locked", "--all-packages", "--no-hashes", "--no-emit-workspace",
        "--no-dev", "--quiet", "-o", str(pins), silent=True,
    )  # fmt: skip
    wanted = ["splice_core", "splice_mha", "splice_example_ffn"]
    files = [str(w) for w in dist.glob("*.whl") if w.name.split("-")[0] in wanted]
    with session.chdir(tmp):  # outside the workspace: no tool.uv.sources can apply
        session.install("-c", str(pins), *files)
        session.run("python", str(ROOT / "tests" / "wheels" / "check_installed.py"), str(ROOT))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with the peers; writes docs/benchmarks.md."""
    if not (ROOT / "benchmarks" / "run_all.py").is_file():
        session.skip("benchmarks/run_all.py does not exist yet")
    sync(session, "--no-default-groups", "--group", "bench", "--group", "peers")
    session.run("python", "benchmarks/run_all.py", *session.posargs)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Every relative link (and #anchor) in README.md and docs/**/*.md resolves."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [problem for page in pages if page.is_file() for problem in _broken_links(page)]
    if broken:
        session.error("broken links:\n  " + "\n  ".join(broken))
    session.log(f"{len(pages)} pages, all relative links resolve")


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def _anchors(page: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown page."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def _broken_links(page: Path) -> list[str]:
    text = _INLINE_CODE.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
    problems = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}: {target}"
        if not dest.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in _anchors(dest):
            problems.append(f"{where} (no heading #{anchor})")
    return problems


if __name__ == "__main__":
    sys.exit("run with nox: uvx nox (or: uvx nox -s isolated)")
