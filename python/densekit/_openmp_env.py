"""Load the C++ core with a short OpenMP spin-wait, unless the user chose a wait policy.

After each parallel region libgomp's idle workers busy-wait before they sleep: by default
300000 spins (milliseconds) when OMP_WAIT_POLICY is unset. Beside another thread pool (NumPy's
OpenBLAS, torch) those spinning workers keep the cores the other pool needs, and alternating
calls slow down many times over (measured in bench/async_bench.py). libgomp reads
GOMP_SPINCOUNT once, when it is loaded, so it is set here for the import of ``_core`` only
and removed again: child processes and libraries loaded later see the user's environment.
A spin of SPIN_COUNT (a fraction of a millisecond) still catches back-to-back kernel calls:
fewer spins (1000) made a small training step 1.6x slower here.

When libgomp is already in the process (torch imported before densekit shares its
libgomp.so.1), its setting stands; ``status`` says so. Set GOMP_SPINCOUNT yourself then, or
import densekit first.
"""

from __future__ import annotations

import importlib
import os
import sys

SPIN_COUNT = 3000
_USER_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")

status = "not loaded"


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def load_core():
    """Import densekit._core with GOMP_SPINCOUNT=SPIN_COUNT unless the user set a policy."""
    global status
    name = __package__ + "._core"
    if name in sys.modules:
        return sys.modules[name]
    if any(key in os.environ for key in _USER_SETTINGS):
        status = "the user's setting"
        return importlib.import_module(name)
    if _libgomp_loaded():
        status = "libgomp was loaded before densekit: its spin count stands"
        return importlib.import_module(name)
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        core = importlib.import_module(name)
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
    status = f"GOMP_SPINCOUNT={SPIN_COUNT}"
    return core


load_core()
