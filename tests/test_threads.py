"""Thread controls, the GIL contract, concurrent callers, errors in parallel regions, fork."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import densekit
from densekit import _core, kernels

from .helpers import random_array


def run_python(code: str, env: dict | None = None) -> str:
    full_env = dict(os.environ)
    full_env.pop("OMP_NUM_THREADS", None)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(autouse=True)
def automatic_thread_default():
    """Every test starts and ends with the automatic (shared) default."""
    densekit.set_num_threads(None)
    _core._forget_busy_python()
    yield
    densekit.set_num_threads(None)


def test_set_get_and_context_manager_restore():
    automatic = densekit.get_num_threads()
    with densekit.num_threads(2):
        assert _core.num_threads_is_explicit()
    assert not _core.num_threads_is_explicit() and densekit.get_num_threads() == automatic
    try:
        densekit.set_num_threads(3)
        assert densekit.get_num_threads() == 3
        with densekit.num_threads(1) as n:
            assert n == 1 and densekit.get_num_threads() == 1
        assert densekit.get_num_threads() == 3
        with pytest.raises(RuntimeError), densekit.num_threads(2):
            raise RuntimeError("inside")
        assert densekit.get_num_threads() == 3
    finally:
        densekit.set_num_threads(None)


def test_setting_is_seen_from_other_python_threads():
    seen = []
    try:
        densekit.set_num_threads(5)
        worker = threading.Thread(target=lambda: seen.append(densekit.get_num_threads()))
        worker.start()
        worker.join()
    finally:
        densekit.set_num_threads(None)
    assert seen == [5]


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-2, ValueError), (1.0, TypeError), ("2", TypeError)]
)
def test_invalid_thread_counts_are_rejected(value, error):
    with pytest.raises(error, match="n"):
        densekit.set_num_threads(value)


def test_default_follows_omp_num_threads():
    code = "import densekit; print(densekit.get_num_threads())"
    assert run_python(code, {"OMP_NUM_THREADS": "3"}) == "3"
    assert run_python(code, {"OMP_NUM_THREADS": "3,1"}) == "3"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_default_follows_cpu_affinity():
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]});"
        "import densekit; print(densekit.get_num_threads())"
    )
    assert run_python(code) == "1"


def test_build_reports_openmp():
    """OpenMP is compiled in unless the build was configured without it (DENSEKIT_OPENMP=OFF,
    the macOS wheels): a default build that silently lost it fails here."""
    info = densekit.build_info()
    assert info["openmp_mode"] in ("auto", "on", "off")
    assert info["openmp"] is (info["openmp_mode"] != "off")
    assert info["hardware_threads"] >= 1


needs_openmp = pytest.mark.skipif(
    not densekit.build_info()["openmp"], reason="a build without OpenMP (DENSEKIT_OPENMP=OFF)"
)


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_exception_inside_parallel_region_becomes_python_error(threads):
    with pytest.raises(ValueError, match="task 5 failed on purpose"):
        _core._raise_in_parallel_region(64, threads, 5)
    _core._raise_in_parallel_region(64, threads, -1)  # and the pool still works afterwards


def count_while(action) -> tuple[int, float]:
    """Counts in a pure-Python thread while `action` runs on this thread."""
    stop = threading.Event()
    counter = [0]

    def count():
        while not stop.is_set():
            counter[0] += 1

    worker = threading.Thread(target=count)
    worker.start()
    time.sleep(0.02)
    start_count = counter[0]
    start = time.perf_counter()
    action()
    elapsed = time.perf_counter() - start
    done = counter[0] - start_count
    stop.set()
    worker.join()
    return done, elapsed


def test_gil_is_released_during_kernels():
    rng = np.random.default_rng(0)
    w = random_array(rng, (512, 512), np.float64)
    # Each call must last far longer than the 5 ms switch interval: a kernel holding the GIL
    # would then leave the counter only the gaps between calls (a few percent).
    rows = 64
    while timed(lambda r=rows: kernels.dense_forward(np.ones((r, 512)), w, num_threads=1)) < 0.15:
        rows *= 2
    x = random_array(rng, (rows, 512), np.float64)

    def kernel_loop():
        for _ in range(3):
            kernels.dense_forward(x, w, num_threads=1)

    # Best of three: other processes on a loaded machine can take the counter's core for a
    # while, but a kernel holding the GIL would starve it on every try.
    ratios = []
    for _ in range(3):
        solo, solo_time = count_while(lambda: time.sleep(0.3))
        during, kernel_time = count_while(kernel_loop)
        ratios.append((during / kernel_time) / (solo / solo_time))
        if ratios[-1] > 0.4:
            break
    assert max(ratios) > 0.4, ratios


def timed(fn) -> float:
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_concurrent_callers_get_correct_results():
    rng = np.random.default_rng(1)
    x = random_array(rng, (257, 300), np.float32)
    w = random_array(rng, (300, 129), np.float32)
    b = random_array(rng, (129,), np.float32)
    dy = random_array(rng, (257, 129), np.float32)
    expected_y = kernels.dense_forward(x, w, b, "relu")
    expected_grads = kernels.dense_backward(dy, x, w, y=expected_y, activation="relu")
    failures = []

    def worker(seed):
        threads = 1 + seed % 3
        for _ in range(15):
            y = kernels.dense_forward(x, w, b, "relu", num_threads=threads)
            grads = kernels.dense_backward(dy, x, w, y=y, activation="relu", num_threads=threads)
            if not np.array_equal(y, expected_y) or not all(
                np.array_equal(g, e) for g, e in zip(grads, expected_grads)
            ):
                failures.append(seed)

    pool = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert failures == []


def _child_kernel(queue):
    x = np.ones((64, 64), np.float32)
    queue.put(float(kernels.dense_forward(x, x).sum()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_does_not_hang():
    x = np.ones((256, 256), np.float32)
    kernels.dense_forward(x, x, num_threads=2)  # start the OpenMP pool in the parent
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_kernel, args=(queue,))
    child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        pytest.fail("forked child hung in a kernel")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 64.0**3


def probe_concurrently(callers: int, **kwargs) -> list[int]:
    barrier = threading.Barrier(callers)
    results = [0] * callers

    def call(index):
        barrier.wait()
        results[index] = _core._probe_region_threads(16, sleep_ms=60, **kwargs)

    pool = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


def test_a_lone_caller_gets_every_core():
    cores = _core.hardware_threads()
    assert _core._probe_region_threads(16, sleep_ms=5) == min(cores, 16)


def test_concurrent_callers_share_the_cores():
    cores = _core.hardware_threads()
    results = probe_concurrently(4)
    # Each region gets cores / (regions running); a caller that started before the others
    # arrived may hold more, but the sum stays near the core count, not 4 x cores.
    assert sum(results) <= cores + 3, results
    assert all(r >= 1 for r in results)


def test_explicit_thread_counts_override_the_budget():
    results = probe_concurrently(4, num_threads=2)
    assert results == [2, 2, 2, 2]
    densekit.set_num_threads(2)
    assert probe_concurrently(3) == [2, 2, 2]


@needs_openmp
def test_threadpoolctl_limit_is_honoured():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    code = (
        "import threadpoolctl, densekit\n"
        "from densekit import _core\n"
        "with threadpoolctl.threadpool_limits(1, user_api='openmp'):\n"
        "    print(_core._probe_region_threads(16, sleep_ms=2))\n"
        "print(_core._probe_region_threads(16, sleep_ms=2))\n"
    )
    del threadpoolctl
    inside, after = run_python(code, {"OMP_NUM_THREADS": "2"}).split()
    assert (inside, after) == ("1", "2")


def test_a_busy_python_thread_keeps_a_core():
    cores = _core.hardware_threads()
    stop = threading.Event()
    running = threading.Event()

    def spin():
        running.set()
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        assert running.wait(10)
        x = np.ones((512, 512), np.float32)
        seen = []
        for _ in range(4):
            kernels.dense_forward(x, x.T.copy())  # returns through a GIL held by the spinner
            seen.append(_core._probe_region_threads(16, sleep_ms=1))
    finally:
        stop.set()
        spinner.join()
    # The first call may return before the spinner holds the GIL; later ones see it.
    assert max(seen[1:]) <= max(1, cores - 1), seen
    time.sleep(0.25)  # the signal fades once Python goes quiet
    assert _core._probe_region_threads(16, sleep_ms=1) == min(cores, 16)


def test_absurd_thread_counts_are_capped():
    cores = _core.hardware_threads()
    cap = max(64, 4 * cores)
    assert _core._probe_region_threads(100_000, num_threads=1_000_000) <= cap
    z = np.ones(1 << 20, np.float32)
    np.testing.assert_array_equal(kernels.activation_forward(z, "relu", num_threads=50_000), z)


_SAME_BITS_CODE = """
import hashlib, numpy as np
from densekit import kernels
rng = np.random.default_rng(5)
digest = hashlib.sha256()
for n, k, m in ((1, 300, 70), (37, 129, 65), (256, 256, 256), (300, 1000, 40)):
    x = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal((k, m)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    y = kernels.dense_forward(x, w, b, "gelu", num_threads=THREADS)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = kernels.dense_backward(dy, x, w, activation="relu", y=np.maximum(y, 0),
                                        num_threads=THREADS)
    loss, grad = kernels.softmax_cross_entropy(y, rng.integers(0, m, n), num_threads=THREADS)
    for part in (y, dx, dw, db, grad, np.float64(loss)):
        digest.update(np.ascontiguousarray(part).tobytes())
print(digest.hexdigest())
"""


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_pool_and_openmp_regions_compute_the_same_bits(threads):
    """Regions on densekit's pool (default, with and without spinning) and on OpenMP give the
    same bits as one thread: work is claimed from shared cursors, whoever runs it."""
    code = _SAME_BITS_CODE.replace("THREADS", str(threads))
    one = run_python(_SAME_BITS_CODE.replace("THREADS", "1"))
    assert run_python(code) == one
    assert run_python(code, {"DENSEKIT_SPIN_US": "0"}) == one
    if _core.build_info()["openmp"]:
        assert run_python(code, {"DENSEKIT_THREADING": "openmp"}) == one


def test_build_info_reports_the_threading():
    code = "from densekit import _core; i = _core.build_info(); print(i['threading'], i['spin_us'])"
    assert run_python(code, {"DENSEKIT_SPIN_US": "35"}) == "pool 35"
    if _core.build_info()["openmp"]:
        assert run_python(code, {"DENSEKIT_THREADING": "openmp"}).split()[0] == "openmp"


def test_many_more_threads_than_cores_give_the_same_bits():
    """Explicit counts far above the cores: most workers start late; the caller never waits
    for one that has not started, and the bits stay those of one thread."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 200)).astype(np.float32)
    w = rng.standard_normal((200, 500)).astype(np.float32)
    expected = kernels.dense_forward(x, w, num_threads=1)
    for _ in range(20):
        np.testing.assert_array_equal(kernels.dense_forward(x, w, num_threads=48), expected)
