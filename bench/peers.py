"""The libraries densekit is measured against, imported when present, and their thread counts.

NumPy is always there; torch, scipy (for an exact erf in NumPy's gelu) and threadpoolctl (to
give NumPy's BLAS the same thread count) are optional.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

import densekit


def optional_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


torch = optional_import("torch")
scipy_special = optional_import("scipy.special")
threadpoolctl = optional_import("threadpoolctl")

_blas_limit: Any = None  # keeps threadpoolctl's limit alive for the whole run


def set_threads(n: int) -> None:
    """Give densekit, torch (intra-op) and NumPy's BLAS the same thread count."""
    global _blas_limit
    densekit.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    if threadpoolctl is not None:
        _blas_limit = threadpoolctl.threadpool_limits(n, user_api="blas")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's thread count inside the block (densekit's is passed to each call)."""
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def blas_info() -> list[dict[str, Any]]:
    if threadpoolctl is None:
        return []
    return [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for info in threadpoolctl.threadpool_info()
        if info.get("user_api") == "blas"
    ]


def thread_counts() -> dict[str, Any]:
    counts: dict[str, Any] = {"densekit": densekit.get_num_threads()}
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
        counts["torch_interop"] = torch.get_num_interop_threads()
    blas = blas_info()
    counts["numpy_blas"] = blas[0]["num_threads"] if blas else "unknown (no threadpoolctl)"
    return counts


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"densekit": densekit.__version__, "numpy": np.__version__}
    for name in ("torch", "scipy", "matplotlib", "threadpoolctl"):
        module = optional_import(name)
        found[name] = getattr(module, "__version__", None) if module else None
    return found
