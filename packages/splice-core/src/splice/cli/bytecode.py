"""Compile the environment's bytecode once, when Python is told never to write it.

With ``PYTHONDONTWRITEBYTECODE`` set, every process compiles torch and the rest of the
environment from source again (seconds per command). uv's ``compile-bytecode`` setting
avoided that, but uv re-compiles the whole site-packages on *every* ``uv run`` (a known
uv behaviour), which costs about as much. So the CLI does it itself: once per change
of site-packages (new or removed packages change the folder's modification time,
recorded in a marker file), and never when Python may write bytecode as it imports.
"""

from __future__ import annotations

import compileall
import os
import sys
import sysconfig
from pathlib import Path

MARKER = ".splice-bytecode"


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _stamp(site: Path) -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]} {site.stat().st_mtime_ns}"


def ensure_bytecode(*, site: Path | None = None, marker_dir: Path | None = None) -> bool:
    """Compile ``site`` (default: this environment's site-packages) if it changed.

    Only acts inside a virtual environment whose Python may not write bytecode itself
    (``sys.dont_write_bytecode``). Returns True when it compiled.
    """
    if site is None:
        if not sys.dont_write_bytecode or sys.prefix == sys.base_prefix:
            return False
        site = _site_packages()
    marker = (marker_dir or Path(sys.prefix)) / MARKER
    try:
        if marker.is_file() and marker.read_text().strip() == _stamp(site):
            return False
        if not os.access(site, os.W_OK):
            return False
        print("splice: compiling this environment's bytecode once ...", file=sys.stderr)
        compileall.compile_dir(site, quiet=2, workers=0)
        marker.write_text(_stamp(site) + "\n")
    except OSError:
        return False  # a read-only or vanished environment: run from source, as before
    return True


__all__ = ["ensure_bytecode"]
