"""Sphinx configuration of densekit's documentation: MyST guides, numpydoc API reference.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` from the repository
root, with densekit importable (installed, or ``PYTHONPATH=python``). The compiled module's
signatures are taken from ``_core.pyi`` (pybind11's own read ``object`` for every argument).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench, for nothing but the benchmarks page's links

from sphinx.util import logging  # noqa: E402

import densekit  # noqa: E402 - after sys.path

LOGGER = logging.getLogger(__name__)

project = "densekit"
author = "densekit developers"
copyright = "densekit developers"
release = densekit.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_docstring_signature = True
autoclass_content = "both"  # a pybind11 class has its signature on __init__'s docstring
numpydoc_show_class_members = False  # autodoc lists them; no autosummary tables to keep
numpydoc_class_members_toctree = False

html_theme = "pydata_sphinx_theme"
html_title = f"densekit {release}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []


# --- signatures of densekit._core from its stub file -------------------------------------------
# pybind11 writes "name(x: object, ...) -> numpy.ndarray" as a docstring's first line; the stub
# has the real types. Each function's and method's signature in the stub replaces pybind11's.

STUB = ROOT / "python" / "densekit" / "_core.pyi"


def _stub_signatures(path: Path) -> dict[str, tuple[str, str | None]]:
    """Qualified name -> (argument list, return annotation) for every def in the stub."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, tuple[str, str | None]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef):
                if any(ast.unparse(d) in ("property", "overload") for d in node.decorator_list):
                    continue
                args = node.args
                if prefix and args.args and args.args[0].arg == "self":
                    args = ast.arguments(
                        posonlyargs=args.posonlyargs,
                        args=args.args[1:],
                        vararg=args.vararg,
                        kwonlyargs=args.kwonlyargs,
                        kw_defaults=args.kw_defaults,
                        kwarg=args.kwarg,
                        defaults=args.defaults,
                    )
                returns = ast.unparse(node.returns) if node.returns is not None else None
                found[prefix + node.name] = (f"({ast.unparse(args)})", returns)

    visit(tree.body, "")
    return found


CORE_SIGNATURES = _stub_signatures(STUB)


def _core_signature(app, what, name, obj, options, signature, return_annotation):
    if getattr(obj, "__module__", None) != "densekit._core":
        return None
    # pybind11 functions have an odd __qualname__: the name autodoc documents is the reliable one
    for prefix in ("densekit.kernels.", "densekit._core.", "densekit."):
        if name.startswith(prefix):
            qualname = name[len(prefix) :]
            break
    else:
        return None
    if what == "class":
        qualname += ".__init__"
    stub = CORE_SIGNATURES.get(qualname)
    if stub is None and what in ("function", "method"):
        LOGGER.warning("%s: no signature in _core.pyi", name, type="densekit", subtype="stub")
    if stub is None or signature is None:  # Sphinx cannot replace a signature it did not find
        return None
    args, returns = stub
    return args, (None if what == "class" or returns == "None" else returns)


def setup(app):
    app.connect("autodoc-process-signature", _core_signature)
