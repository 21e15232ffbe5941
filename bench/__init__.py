"""densekit's microbenchmarks: each case is verified against NumPy and torch, then timed
against them, interleaved in one process. Run `python -m bench --help`; see bench/README.md."""

import os

# OpenBLAS's idle workers spin for 2**28 cycles (~0.1 s) after each call, and on a machine with
# few cores that spinning slows whichever library is timed next by 10x or more. 2**20 cycles
# (~0.4 ms) still keeps them awake between NumPy's own back-to-back calls. It is read when
# OpenBLAS loads, so it is set before anything imports NumPy; a value in the environment wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
