"""Strategies and tolerances shared by the kernel tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from hypothesis import strategies as st

# Awkward sizes: empty, one, primes, just off every SIMD width and tile size.
AWKWARD = [0, 1, 2, 3, 5, 7, 8, 13, 15, 16, 17, 31, 33, 47, 63, 65, 97, 127, 129]
FLOATS = [np.float32, np.float64]
THREAD_COUNTS = [1, 2, 3, 7]

dims = st.sampled_from(AWKWARD)
positive_dims = st.sampled_from([d for d in AWKWARD if d > 0])
dtypes = st.sampled_from(FLOATS)
# Magnitudes from tiny to large, so scaling bugs and overflow show.
scales = st.sampled_from([1e-3, 1.0, 10.0, 1e3])


def at_offset(array, offset):
    """A C-contiguous copy of `array` starting `offset` elements past a 64-byte boundary."""
    itemsize = array.dtype.itemsize
    buffer = np.empty(array.size + 64 // itemsize + offset, array.dtype)
    start = (-buffer.ctypes.data % 64) // itemsize + offset
    view = buffer[start : start + array.size].reshape(array.shape)
    view[...] = array
    return view


def random_array(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def product_tolerance(x, w, b=None, dtype=None):
    """Elementwise error bound of a k-term dot product in x's dtype: a few ulps of the sum
    of |terms| per term (the standard gamma_k bound with a safety factor)."""
    k = np.shape(x)[-1]
    x64 = np.abs(np.asarray(x, np.float64)).reshape(int(np.prod(np.shape(x)[:-1])), k)
    magnitude = x64 @ np.abs(np.asarray(w, np.float64))
    if b is not None:
        magnitude = magnitude + np.abs(np.asarray(b, np.float64))
    dtype = np.asarray(x).dtype if dtype is None else dtype
    return (2.0 * (k + 2) * eps(dtype)) * magnitude + 1e-300


DENSEKIT_PATH_VARIABLES = ("DENSEKIT_ISA", "DENSEKIT_BF16", "DENSEKIT_INT8")


def json_of_child(code: str, env: dict[str, str], timeout: float = 120) -> object:
    """What a fresh interpreter running `code` prints as JSON, with the path-forcing variables
    (DENSEKIT_ISA, DENSEKIT_BF16, DENSEKIT_INT8) taken from `env` only."""
    full = {k: v for k, v in os.environ.items() if k not in DENSEKIT_PATH_VARIABLES}
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=full,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return json.loads(out.stdout)
