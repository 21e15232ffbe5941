"""densekit: fast, bitwise-reproducible OpenMP kernels for dense layers, with the GIL released.

The compute core is ``densekit._core`` (C++); :mod:`densekit.kernels` is its documented API.
"""

from __future__ import annotations

from . import kernels
from ._threads import get_num_threads, num_threads, set_num_threads
from .kernels import build_info

__version__ = build_info()["version"]

__all__ = [
    "__version__",
    "build_info",
    "get_num_threads",
    "kernels",
    "num_threads",
    "set_num_threads",
]
