"""take_rows: numpy.take along axis 0 without the GIL, checked indices, never converted out=."""

from __future__ import annotations

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
