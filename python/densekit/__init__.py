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
from ._config import cpu_info, show_config
from ._random import set_random_seed
from ._threads import get_num_threads, num_threads, set_num_threads
from .kernels import build_info
from .layers import Input
from .models import Sequential, load_model, quantize

__version__ = build_info()["version"]

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
    "show_config",
]
