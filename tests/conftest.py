"""Fixtures for cross-package tests: install a test plugin package, run Python with it.

Test plugin packages live in ``tests/plugins/<name>/`` with their own ``pyproject.toml``.
``install_plugin`` installs one with ``uv pip install --no-deps --target DIR`` (a real
wheel build through its build backend, cached per test session) and returns ``DIR``;
``run_python`` runs code in a fresh interpreter with those dirs on ``PYTHONPATH``, so the
installed entry points are seen exactly as an installed distribution's would be, without
touching the test environment other tests use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

TEST_PLUGINS = Path(__file__).parent / "plugins"


def find_uv() -> str:
    """The uv binary: ``$UV`` (set by ``uv run``/``uvx``), then PATH, then the ``uv`` package."""
    found = os.environ.get("UV") or shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("these tests install test plugins with uv; put `uv` on PATH")
    return str(find_uv_bin())


@pytest.fixture(scope="session")
def install_plugin(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``install_plugin("splice-example-ffn") -> Path``: a dir holding that installed package."""
    installed: dict[str, Path] = {}

    def install(name: str) -> Path:
        if name not in installed:
            target = tmp_path_factory.mktemp(name)
            cmd = [find_uv(), "pip", "install", "--quiet", "--no-deps", "--python", sys.executable,
                   "--target", str(target), str(TEST_PLUGINS / name)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:  # no network: the build backend may still be in uv's cache
                done = subprocess.run([*cmd, "--offline"], capture_output=True, text=True)
            assert done.returncode == 0, f"installing {name} failed:\n{done.stderr}"
            installed[name] = target
        return installed[name]

    return install


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_python(*args, plugins=[dir, ...], env={...})``: ``python *args`` in a fresh process.

    E.g. ``run_python("-c", code, plugins=[d])`` runs ``code`` with the package installed in
    ``d`` visible to ``importlib.metadata``. SPLICE_* variables of the calling environment are dropped
    so each test sets its own.
    """

    def run(
        *args: str, plugins: Sequence[Path] = (), env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")}
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in plugins)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=300
        )

    return run


# Test plugin packages are installed by the tests above, not collected from the source tree.
collect_ignore_glob = ["plugins/*"]
