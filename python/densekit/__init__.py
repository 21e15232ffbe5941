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
    data,
    initializers,
    jobs,
    kernels,
    layers,
    losses,
    metrics,
    optimizers,
    regularizers,
    schedules,
)
from ._random import set_random_seed
from ._threads import get_num_threads, num_threads, set_num_threads
from .kernels import build_info
from .layers import Input
from .models import Sequential
from .saving import load_model

__version__ = build_info()["version"]

__all__ = [
    "Input",
    "Sequential",
    "__version__",
    "activations",
    "build_info",
    "callbacks",
    "data",
    "get_num_threads",
    "initializers",
    "jobs",
    "kernels",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "num_threads",
    "optimizers",
    "regularizers",
    "schedules",
    "set_num_threads",
    "set_random_seed",
]
