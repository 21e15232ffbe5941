"""The documentation builds without a warning, and its generated pages match their sources.

Sphinx (numpydoc, autodoc of every public module and of _core through _core.pyi) runs with
warnings as errors, so a broken docstring fails the suite; the benchmarks page and the
README's headline are what `python -m bench.report` makes of the reference run's JSON file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "bench" / "results-reference.json"


def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    pytest.importorskip("myst_parser")
    pytest.importorskip("pydata_sphinx_theme")
    import densekit

    environment = dict(os.environ)
    # densekit as the tests import it (installed, or a source tree on PYTHONPATH)
    package_parent = str(Path(densekit.__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        [package_parent, *filter(None, [environment.get("PYTHONPATH")])]
    )
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")]
    result = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr


def kept_runs() -> list[tuple[str, str]]:
    """(results JSON, its page): the reference run's, and one per other CPU kind kept
    (bench/results-<kind>.json -> docs/benchmarks-<kind>.md)."""
    runs = [("bench/results-reference.json", "docs/benchmarks.md")]
    for path in sorted((ROOT / "bench").glob("results-*.json")):
        kind = path.stem.removeprefix("results-")
        if kind != "reference":
            runs.append((f"bench/{path.name}", f"docs/benchmarks-{kind}.md"))
    return runs


@pytest.mark.parametrize("results,page_path", kept_runs())
def test_benchmarks_pages_are_generated_from_the_kept_runs(results, page_path):
    from bench import report

    document = json.loads((ROOT / results).read_text(encoding="utf-8"))
    expected = report.markdown_page(document, results)
    page = (ROOT / page_path).read_text(encoding="utf-8")
    assert page == expected, (
        f"{page_path} differs from what {results} gives: regenerate it with "
        f"python -m bench.report {results} > {page_path}"
    )


def test_every_benchmarks_page_is_in_the_documentation():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for _, page_path in kept_runs():
        entry = f"\n{Path(page_path).stem}\n"
        assert entry in index, f"{page_path}: not in docs/index.md's toctree"


def test_readme_headline_is_generated_from_the_reference_run():
    from bench import report

    document = json.loads(REFERENCE.read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert report.update_readme(readme, document) == readme, (
        "README.md's headline differs from what the reference JSON gives: regenerate it with "
        "python -m bench.report --readme README.md bench/results-reference.json"
    )


def test_bench_report_command_prints_the_page():
    result = subprocess.run(
        [sys.executable, "-m", "bench.report", "bench/results-reference.json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")


def activation_table() -> list[dict[str, str]]:
    """The rows of the kernels guide's activations table, as {column title: cell}."""
    text = (ROOT / "docs" / "guide" / "kernels.md").read_text(encoding="utf-8")
    block = text.split("<!-- begin activations table -->")[1].split(
        "<!-- end activations table -->"
    )
    lines = [line.strip() for line in block[0].strip().splitlines()]
    titles = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:  # after the title and the --- row
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows.append(dict(zip(titles, cells)))
    return rows


def test_activation_table_follows_the_kernels_table():
    from densekit import kernels

    rows = activation_table()
    assert tuple(row["activation"] for row in rows) == tuple(kernels.ACTIVATIONS)
    for row in rows:
        info = kernels.ACTIVATION_INFO[row["activation"]]
        alpha = "-" if info["alpha"] is None else f"{info['alpha']:g}"
        assert row["alpha default"] == alpha, row
        assert row[PREACTIVATION] == ("yes" if info["needs_preactivation"] else "no"), row


PREACTIVATION = "derivative needs the pre-activation"
