"""densekit: fast, bitwise-reproducible OpenMP kernels for dense layers, with the GIL released.

The compute core is ``densekit._core`` (C++); :mod:`densekit.kernels` is its documented API.
"""

from __future__ import annotations

from . import _openmp_env  # noqa: F401 - first: loads _core with densekit's OpenMP wait policy

# isort: split
# The Keras-style model layer (its progress bar imports tqdm lazily).
from . import (
    activations,
    callbacks,
    constraints,
    data,
    initializers,
    jobs,
    kernels,
    layers,
    losses,
    metrics,
    mixed_precision,
    optimizers,
    regularizers,
    schedules,
)
from ._random import set_random_seed
from ._threads import get_num_threads, num_threads, set_num_threads
from .kernels import build_info
from .layers import Input
from .models import Sequential, load_model, quantize

__version__ = build_info()["version"]


def cpu_info() -> dict:
    """What the matrix-product engine found and chose at import.

    Returns a dict: ``features`` (CPU flags seen, e.g. ``{"avx512f": True, ...}``), ``isa``
    (the ISA in use per dtype; for "bfloat16" and "int8" the low-precision products' path:
    "amx", "avx512_bf16" / "avx512_vnni", or "emulated"), ``microkernels`` (kernel family per
    dtype, e.g.
    ``"avx512 14x32"``), ``available_isas`` (those this CPU and build can run, best first),
    ``best_isa``, ``forced`` (True when the ``DENSEKIT_ISA`` environment variable chose a
    lower ISA), ``requested`` (its value, or None) and ``note`` (why a request was not
    honoured, or "").
    """
    info = build_info()
    isa = info["gemm_isa"]
    return {
        "features": dict(info["cpu_features"]),
        "isa": {
            "float32": isa,
            "float64": isa,
            "bfloat16": kernels.bf16_config()["path"],
            "int8": kernels.int8_config()["path"],
        },
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
    "Input",
    "Sequential",
    "__version__",
    "activations",
    "build_info",
    "callbacks",
    "constraints",
    "cpu_info",
    "data",
    "get_num_threads",
    "initializers",
    "jobs",
    "kernels",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "mixed_precision",
    "models",
    "num_threads",
    "optimizers",
    "quantize",
    "regularizers",
    "schedules",
    "set_num_threads",
    "set_random_seed",
]
