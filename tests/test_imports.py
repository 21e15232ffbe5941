"""The package's modules import one way: no import cycles, function-level imports included,
and every module imports first in a fresh interpreter."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import densekit

PACKAGE = Path(densekit.__file__).resolve().parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))
EXTENSIONS = {"_core"}  # compiled: imports no package module
INIT = "__init__"


def _target(name: str) -> str:
    """The module a name imported from the package refers to: a submodule, or __init__."""
    return name if name in MODULES or name in EXTENSIONS else INIT


def imports_of(module: str) -> set[str]:
    """The package modules ``module`` imports, at any level of its code (a function-level
    import counts as much as one at the top)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and node.module == "densekit"):
                if node.module and node.level == 1:  # from .x import y
                    found.add(_target(node.module.split(".")[0]))
                else:  # from . import x, y / from densekit import x
                    found.update(_target(alias.name) for alias in node.names)
            elif node.level == 0 and (node.module or "").startswith("densekit."):
                found.add(_target(node.module.split(".")[1]))
            elif node.level > 1:
                raise AssertionError(f"{module}: relative import beyond the package")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "densekit":
                    found.add(_target(parts[1]) if len(parts) > 1 else INIT)
    found.discard(module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for following in sorted(graph.get(node, ())):
            if state.get(following) == "open":
                return [*path[path.index(following) :], following]
            if following not in state:
                cycle = visit(following)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycles():
    graph = {module: imports_of(module) for module in MODULES}
    assert graph["models"] >= {"training", "saving", "_fit"}  # the parser sees imports
    assert "models" not in graph["saving"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_first_in_a_fresh_interpreter():
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE.parent), *filter(None, [environment.get("PYTHONPATH")])]
    )
    names = ["densekit" if module == INIT else f"densekit.{module}" for module in MODULES]
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    }
    failures = {}
    for name, run in runs.items():
        _, errors = run.communicate(timeout=120)
        if run.returncode:
            failures[name] = errors.strip().splitlines()[-1:]
    assert not failures


def test_float32_work_does_not_import_ml_dtypes():
    """ml_dtypes (bf16's NumPy dtype) takes ~0.6 s to import, three quarters of `import
    densekit`'s time: it is imported where bf16 is first used, not by float32 work."""
    code = (
        "import sys, numpy as np, densekit\n"
        "model = densekit.Sequential([densekit.layers.Dense(3, activation='relu'),"
        " densekit.layers.Dense(2)])\n"
        "model.compile('adam', 'mse')\n"
        "model.fit(np.ones((8, 4), np.float32), np.ones((8, 2), np.float32), verbose=0)\n"
        "print('ml_dtypes' in sys.modules)\n"
        "model = densekit.Sequential([densekit.layers.Dense(3, dtype='mixed_bfloat16')])\n"
        "model.compile('sgd', 'mse')\n"
        "model.fit(np.ones((8, 4), np.float32), np.ones((8, 3), np.float32), verbose=0)\n"
        "densekit.kernels.to_bfloat16(np.ones(3, np.float32))\n"
        "print('ml_dtypes' in sys.modules)\n"
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE.parent), *filter(None, [environment.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def _private_names_defined(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, classes, attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {name for name in names if name.startswith("_")}


def test_no_module_reads_another_modules_private_attributes():
    """``x._name`` only where the module itself defines ``_name`` (its own classes' state);
    modules use each other through public names. The compiled _core's test hooks and
    Python's own private API (``sys._getframe``, ``_thread``) are not the package's."""
    outside = {"_core", "_getframe", "_thread", "_signal", "_exit"}
    found = []
    for module in MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        own = _private_names_defined(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or node.attr in own or node.attr in outside:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("_core", "kernels"):
                continue  # the extension's private test hooks, re-exported by kernels
            found.append(f"{module}.py:{node.lineno}: .{node.attr}")
    assert not found, "private attributes of other modules:\n" + "\n".join(found)
