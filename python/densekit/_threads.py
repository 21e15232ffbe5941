"""Process-wide thread count of densekit's kernels.

The setting lives in the C++ core and is read by every kernel call that passes
``num_threads=None``, whichever Python thread makes the call (unlike OpenMP's per-thread
``omp_set_num_threads``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from . import _core

_lock = threading.Lock()


def get_num_threads() -> int:
    """The number of threads kernels use by default (OMP_NUM_THREADS or the CPU affinity)."""
    return _core.get_num_threads()


def set_num_threads(n: int | None) -> None:
    """Set the process-wide default thread count of densekit's kernels (n >= 1).

    ``None`` returns to the automatic default (OMP_NUM_THREADS or the CPUs in the affinity
    mask). Only the automatic default is shared out between Python threads calling kernels
    at the same time; a count set here, or passed as ``num_threads=``, is used as given.
    """
    _core.set_num_threads(n)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Use ``n`` threads by default inside the block, then restore the previous setting.

    The setting is process-wide, like ``threadpoolctl.threadpool_limits``: kernels called from
    other Python threads during the block see it too.
    """
    with _lock:
        previous = _core.get_num_threads() if _core.num_threads_is_explicit() else None
        _core.set_num_threads(n)
    try:
        yield n
    finally:
        with _lock:
            _core.set_num_threads(previous)
