"""The release metadata agrees with itself: the version defined once, the Python versions that
the classifiers, requires-python and the wheel builds name, the changelog, the typed package,
and the wheels cibuildwheel would build (docs/guide/install.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import densekit

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_defined_once():
    version = pyproject()["project"]["version"]
    assert densekit.__version__ == densekit.build_info()["version"] == version
    # No second definition: CMake and the docs read it from the build.
    for path in [ROOT / "CMakeLists.txt", ROOT / "docs" / "conf.py", *ROOT.glob("python/**/*.py")]:
        assert not re.search(r"""version\s*=\s*["']\d+\.\d+""", path.read_text()), path


def test_python_versions_agree():
    project = pyproject()
    assert project["project"]["requires-python"] == f">={PYTHONS[0]}"
    listed = [
        c.rsplit(" :: ", 1)[1]
        for c in project["project"]["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert listed == PYTHONS
    builds = project["tool"]["cibuildwheel"]["build"]
    assert builds == [f"cp{v.replace('.', '')}-*" for v in PYTHONS]


def test_changelog_has_unreleased_and_this_version_first():
    version = pyproject()["project"]["version"]
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[:2] == ["Unreleased", version]


def test_the_package_is_typed():
    package = Path(densekit.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "_core.pyi").is_file()


def test_cibuildwheel_selects_the_release_wheels():
    command = shutil.which("cibuildwheel")
    if command is None:
        pytest.skip("cibuildwheel is not installed (pip install '.[test]' installs it)")
    identifiers = set()
    for platform in ("linux", "macos"):
        result = subprocess.run(
            [command, "--print-build-identifiers", "--platform", platform],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        identifiers.update(result.stdout.split())
    platforms = [
        "manylinux_x86_64",
        "manylinux_aarch64",
        "musllinux_x86_64",
        "macosx_arm64",
        "macosx_x86_64",
    ]
    expected = {f"cp{v.replace('.', '')}-{p}" for v in PYTHONS for p in platforms}
    assert identifiers == expected  # no free-threaded (cp3XXt) wheels: see module.cpp
