"""Every workspace package carries complete metadata and a splice dependency range that
admits the splice versions in this repository (a plugin cannot silently outgrow its core)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]
PYPROJECTS = sorted(
    [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins/*/pyproject.toml")]
)
VERSIONS = {
    tomllib.loads(p.read_text())["project"]["name"]: tomllib.loads(p.read_text())["project"][
        "version"
    ]
    for p in PYPROJECTS
}


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: p.parent.name)
def test_metadata_is_complete(pyproject: Path) -> None:
    project = tomllib.loads(pyproject.read_text())["project"]
    name = project["name"]
    assert re.fullmatch(r"splice-[a-z]+", name), name
    assert project.get("description", "").strip(), f"{name}: no description"
    readme = project.get("readme")
    assert readme and (pyproject.parent / readme).is_file(), f"{name}: readme file missing"
    assert project.get("license") == "Apache-2.0", f"{name}: license"
    assert project.get("requires-python") == ">=3.11", f"{name}: requires-python"
    classifiers = project.get("classifiers", [])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers, (name, version)
    assert project.get("authors"), f"{name}: authors"


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: p.parent.name)
def test_splice_dependency_ranges_admit_this_repository(pyproject: Path) -> None:
    data = tomllib.loads(pyproject.read_text())
    requirements = [*data["project"].get("dependencies", [])]
    requirements += [
        r for r in data.get("dependency-groups", {}).get("test", []) if isinstance(r, str)
    ]
    for text in requirements:
        req = Requirement(text)
        if not req.name.startswith("splice-"):
            continue
        assert req.name in VERSIONS, f"{pyproject}: depends on unknown {req.name}"
        assert str(req.specifier), f"{pyproject}: {req.name} needs a version range"
        assert req.specifier.contains(VERSIONS[req.name]), (
            f"{pyproject}: {text!r} excludes {req.name} {VERSIONS[req.name]} in this repository"
        )
