"""The README's Python examples run as written (in a temporary directory), and its links to
files of the repository (the docs, bench/README.md) point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
LINKS = sorted(set(re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", TEXT)))  # relative targets only


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})


@pytest.mark.parametrize("target", LINKS)
def test_readme_link_points_at_a_file(target):
    assert (ROOT / target).is_file(), f"README.md links to {target}, which does not exist"
