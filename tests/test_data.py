"""take_rows: numpy.take along axis 0 without the GIL, checked indices, never converted out=."""

from __future__ import annotations

import resource
import sys
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import kernels

from .helpers import AWKWARD, THREAD_COUNTS


@given(
    rows=st.sampled_from([d for d in AWKWARD if d > 0]),
    count=st.sampled_from(AWKWARD),
    tail=st.sampled_from([(), (1,), (7,), (3, 5)]),
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
    index_dtype=st.sampled_from([np.int32, np.int64]),
)
def test_matches_numpy_take(rows, count, tail, dtype, index_dtype):
    rng = np.random.default_rng(rows * 31 + count)
    source = (rng.standard_normal((rows, *tail)) * 100).astype(dtype)
    indices = rng.integers(0, rows, count).astype(index_dtype)
    expected = np.take(source, indices, axis=0)
    np.testing.assert_array_equal(kernels.take_rows(source, indices), expected)
    out = np.empty_like(expected)
    assert kernels.take_rows(source, indices, out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_same_result_for_every_thread_count():
    rng = np.random.default_rng(0)
    source = rng.standard_normal((5000, 67)).astype(np.float32)
    indices = rng.permutation(5000)
    results = [kernels.take_rows(source, indices, num_threads=t) for t in THREAD_COUNTS]
    for result in results:
        np.testing.assert_array_equal(result, source[indices])


def test_rejections_name_the_argument():
    source = np.ones((4, 3))
    good = np.array([0, 3])
    cases = [
        (lambda: kernels.take_rows(source, np.array([0, 4])), ValueError, "indices"),
        (lambda: kernels.take_rows(source, np.array([-1])), ValueError, "indices"),
        (lambda: kernels.take_rows(source, np.array([0.0])), TypeError, "indices"),
        (lambda: kernels.take_rows(source, np.array([[0]])), ValueError, "indices"),
        (lambda: kernels.take_rows([[1.0]], good), TypeError, "source"),
        (lambda: kernels.take_rows(np.ones((4, 6))[:, ::2], good), ValueError, "source"),
        (lambda: kernels.take_rows(np.ones(()), good), ValueError, "source"),
        (lambda: kernels.take_rows(np.array([None, 1]), good), TypeError, "source"),
        # a structured dtype with an object field holds references too
        (
            lambda: kernels.take_rows(np.zeros(4, [("a", "O"), ("b", "i4")]), good),
            TypeError,
            "source",
        ),
        (
            lambda: kernels.take_rows(source, good, out=np.empty((2, 3), np.float32)),
            TypeError,
            "out",
        ),
        (lambda: kernels.take_rows(source, good, out=np.empty((3, 3))), ValueError, "out"),
        (lambda: kernels.take_rows(source, good, out=source[:2]), ValueError, "out"),
        (lambda: kernels.take_rows(source, good, num_threads=0), ValueError, "num_threads"),
    ]
    for call, error, argument in cases:
        with pytest.raises(error) as info:
            call()
        assert str(info.value).startswith(argument + ":"), str(info.value)


def test_an_object_field_keeps_its_references():
    held = object()
    source = np.array([(held, 1)], dtype=[("a", "O"), ("b", "i4")])
    count = sys.getrefcount(held)
    with pytest.raises(TypeError, match="source"):
        kernels.take_rows(source, np.array([0]))
    assert sys.getrefcount(held) == count


@pytest.mark.parametrize(
    "dtype", ["float32", np.float64, np.int8, np.uint16, bool, "complex64", ml_dtypes.bfloat16]
)
@pytest.mark.parametrize("shape", [(), 0, 1, 7, (3, 5), (0, 4), (2, 3, 17)])
def test_empty_and_zeros_are_numpys_on_a_cache_line(dtype, shape):
    a = kernels.empty(shape, dtype)
    b = np.empty(shape, dtype)
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert a.size == 0 or a.strides == b.strides  # NumPy gives a zero-size array 0 strides
    assert a.ctypes.data % 64 == 0
    assert a.flags.c_contiguous and a.flags.writeable
    a[...] = 1
    assert np.all(a == 1)
    z = kernels.zeros(shape, dtype)
    assert (z.shape, z.dtype, z.ctypes.data % 64) == (b.shape, b.dtype, 0)
    np.testing.assert_array_equal(z, np.zeros(shape, dtype))
    assert kernels.empty(np.int64(3)).shape == (3,)  # any integer with __index__
    assert kernels.empty([2, 3]).dtype == np.float32  # the default dtype
    assert kernels.empty(np.array([2, 3])).shape == (2, 3)


def test_arrays_the_kernels_make_start_on_a_cache_line():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    x16 = kernels.to_bfloat16(x)
    made = [
        kernels.dense_forward(x, w),
        x16,
        kernels.from_bfloat16(x16),
        kernels.matmul_bf16(x16, kernels.to_bfloat16(w)),
        kernels.take_rows(x, np.array([4, 0])),
        *kernels.dense_backward(np.ones((5, 3), np.float32), x, w),
        kernels.QuantizedWeights.quantize(w).weights,
        kernels.QuantizedWeights.quantize(w).scales,
    ]
    assert [a.ctypes.data % 64 for a in made] == [0] * len(made)


def test_tracemalloc_counts_the_arrays_as_numpys():
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        a = kernels.empty((256, 1024), np.float32)  # 1 MiB
        held, _ = tracemalloc.get_traced_memory()
        del a
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held - before >= 1 << 20
    assert after - before < 1 << 16


def test_empty_frees_its_storage():
    # 40 arrays of 16 MiB, each written (so its pages are resident) and dropped: a leak would
    # grow the peak resident size by 640 MiB. The bound allows AddressSanitizer's quarantine
    # (tools/sanitize.sh), which keeps up to 256 MiB of freed blocks resident before reusing
    # them: 165 MiB of growth failed a bound of 160 in a sanitized run.
    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    kernels.empty(4 << 20, np.float32).fill(1)
    start = peak_mib()
    for _ in range(40):
        kernels.empty(4 << 20, np.float32).fill(1)
    assert peak_mib() - start < 320


def test_empty_and_zeros_rejections_name_the_argument():
    cases = [
        (lambda make: make((2, -1)), ValueError, "shape"),
        (lambda make: make(2**70), ValueError, "shape"),
        (lambda make: make(2.5), TypeError, "shape"),
        (lambda make: make((2, 2.0)), TypeError, "shape"),
        (lambda make: make(True), TypeError, "shape"),
        (lambda make: make("3"), TypeError, "shape"),
        # an ndarray's items are made as they are read (found by tools/fuzz_bindings.py: read
        # after their release, a crash)
        (lambda make: make(np.empty((5, 0))), TypeError, "shape"),
        (lambda make: make(3, "no such dtype"), TypeError, "dtype"),
        (lambda make: make(3, object), TypeError, "dtype"),
        (lambda make: make(3, "U4"), TypeError, "dtype"),
        (lambda make: make(3, [("a", "f4"), ("b", "i4")]), TypeError, "dtype"),
    ]
    for make in (kernels.empty, kernels.zeros):
        for call, error, argument in cases:
            with pytest.raises(error) as info:
                call(make)
            assert str(info.value).startswith(argument + ":"), str(info.value)
        with pytest.raises(MemoryError, match="unable to allocate"):
            make((1 << 40, 1 << 30))
