"""densekit: fast, bitwise-reproducible OpenMP kernels for dense layers, with the GIL released.

The compute core is ``densekit._core`` (C++); :mod:`densekit.kernels` is its documented API.
"""

from __future__ import annotations

from . import kernels
from ._threads import get_num_threads, num_threads, set_num_threads
from .kernels import build_info

__version__ = build_info()["version"]


def cpu_info() -> dict:
    """What the matrix-product engine found and chose at import.

    Returns a dict: ``features`` (CPU flags seen, e.g. ``{"avx512f": True, ...}``), ``isa``
    (the ISA in use per dtype), ``microkernels`` (kernel family per dtype, e.g.
    ``"avx512 12x32"``), ``available_isas`` (those this CPU and build can run, best first),
    ``best_isa``, ``forced`` (True when the ``DENSEKIT_ISA`` environment variable chose a
    lower ISA), ``requested`` (its value, or None) and ``note`` (why a request was not
    honoured, or "").
    """
    info = build_info()
    isa = info["gemm_isa"]
    return {
        "features": dict(info["cpu_features"]),
        "isa": {"float32": isa, "float64": isa},
        "microkernels": {
            "float32": info["gemm_kernel_float32"],
            "float64": info["gemm_kernel_float64"],
        },
        "available_isas": list(info["gemm_isas_available"]),
        "best_isa": info["gemm_isa_best"],
        "forced": bool(info["gemm_isa_forced"]),
        "requested": info["gemm_isa_requested"],
        "note": info["gemm_isa_note"],
    }


__all__ = [
    "__version__",
    "build_info",
    "cpu_info",
    "get_num_threads",
    "kernels",
    "num_threads",
    "set_num_threads",
]
