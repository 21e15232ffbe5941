"""The metric kernels (confusion_counts, top_k_hits) against float64 NumPy references
(tests/reference_metrics.py) on awkward shapes, ties, NaN and weights; the same bits for
every thread count; accumulation into out=; and the boundary checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from densekit import kernels

from . import reference_metrics as reference
from .helpers import AWKWARD, FLOATS, THREAD_COUNTS

HYPOTHESIS = settings(max_examples=40, deadline=None)
WIDTHS = [1, 2, 3, 5, 7, 17, 65]  # 65: two blocks of per-column counts


def values(rng, shape, dtype, kind):
    """Predictions: uniform, coarse (many ties and values equal to thresholds), or with NaN."""
    x = rng.random(shape)
    if kind == "coarse":
        x = np.round(x * 4) / 4
    elif kind == "nan":
        x[rng.random(shape) < 0.2] = np.nan
    return x.astype(dtype)


@HYPOTHESIS
@given(data=st.data())
def test_confusion_counts_match_the_reference(data):
    n = data.draw(st.sampled_from(AWKWARD), "n")
    d = data.draw(st.sampled_from(WIDTHS), "d")
    dtype = data.draw(st.sampled_from(FLOATS), "dtype")
    kind = data.draw(st.sampled_from(["uniform", "coarse", "nan"]), "kind")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    prediction = values(rng, (n, d), dtype, kind)
    target = (rng.random((n, d)) < 0.4).astype(dtype) * rng.choice([1.0, 2.0, -1.0], (n, d))
    target = target.astype(dtype)
    count = data.draw(st.sampled_from([0, 1, 2, 5, 200]), "thresholds")
    thresholds = np.sort(np.concatenate([[0.25, 0.5][:count], rng.random(max(count - 2, 0))]))
    thresholds = thresholds.astype(dtype)
    options = {
        "top_k": data.draw(st.sampled_from([None, 1, 2, d, d + 3]), "top_k"),
        "class_id": data.draw(st.sampled_from([None, 0, d - 1]), "class_id"),
        "multi_label": data.draw(st.booleans(), "multi_label"),
    }
    weighted = data.draw(st.booleans(), "weighted")
    if weighted:
        options["sample_weight"] = rng.uniform(0.0, 3.0, n).astype(dtype)
        options["column_weight"] = rng.uniform(0.0, 2.0, d).astype(dtype)
    got = kernels.confusion_counts(prediction, target, thresholds, **options)
    expected = reference.confusion_counts(prediction, target, thresholds, **options)
    assert got.dtype == np.float64 and got.shape == expected.shape
    if weighted:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)  # counts of ones are exact


def test_one_dimensional_predictions_are_one_column():
    rng = np.random.default_rng(1)
    prediction = rng.random(11)
    target = (rng.random(11) > 0.5).astype(np.float64)
    thresholds = np.array([0.1, 0.5, 0.9])
    got = kernels.confusion_counts(prediction, target, thresholds)
    np.testing.assert_array_equal(got, reference.confusion_counts(prediction, target, thresholds))
    per_column = kernels.confusion_counts(prediction, target, thresholds, multi_label=True)
    assert per_column.shape == (4, 3, 1)


@pytest.mark.parametrize(
    "options",
    [{}, {"multi_label": True}, {"top_k": 3}, {"top_k": 2, "class_id": 40, "multi_label": True}],
)
def test_confusion_counts_are_the_same_for_every_thread_count(options):
    rng = np.random.default_rng(2)
    n, d = 3001, 70  # several row chunks and two column blocks
    prediction = rng.random((n, d)).astype(np.float32)
    target = (rng.random((n, d)) > 0.7).astype(np.float32)
    weights = rng.uniform(0.0, 2.0, n).astype(np.float32)
    thresholds = np.linspace(0.0, 1.0, 33).astype(np.float32)
    results = [
        kernels.confusion_counts(
            prediction, target, thresholds, sample_weight=weights, num_threads=t, **options
        )
        for t in THREAD_COUNTS
    ]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    expected = reference.confusion_counts(
        prediction, target, thresholds, sample_weight=weights, **options
    )
    np.testing.assert_allclose(results[0], expected, rtol=1e-11)


def test_confusion_counts_write_or_add_into_out():
    rng = np.random.default_rng(3)
    prediction = rng.random((9, 2))
    target = (rng.random((9, 2)) > 0.5).astype(np.float64)
    thresholds = np.array([0.2, 0.4, 0.8])
    once = kernels.confusion_counts(prediction, target, thresholds)
    out = np.full((4, 3), 7.0)
    assert kernels.confusion_counts(prediction, target, thresholds, out=out) is out
    np.testing.assert_array_equal(out, once)
    kernels.confusion_counts(prediction, target, thresholds, out=out, accumulate=True)
    np.testing.assert_array_equal(out, 2 * once)
    empty = np.empty((0, 2))
    kernels.confusion_counts(empty, empty, thresholds, out=out, accumulate=True)
    np.testing.assert_array_equal(out, 2 * once)
    kernels.confusion_counts(empty, empty, thresholds, out=out)
    np.testing.assert_array_equal(out, 0.0)


@HYPOTHESIS
@given(data=st.data())
def test_top_k_hits_match_the_reference(data):
    n = data.draw(st.sampled_from(AWKWARD), "n")
    c = data.draw(st.sampled_from([0, *WIDTHS]), "c")
    dtype = data.draw(st.sampled_from(FLOATS), "dtype")
    kind = data.draw(st.sampled_from(["uniform", "coarse", "nan"]), "kind")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    prediction = values(rng, (n, c), dtype, kind)
    k = data.draw(st.sampled_from([1, 2, 3, 8]), "k")
    weights = None
    if data.draw(st.booleans(), "weighted"):
        weights = rng.uniform(0.0, 3.0, n).astype(dtype)
    if c > 0 and data.draw(st.booleans(), "labels"):
        label_dtype = data.draw(st.sampled_from([np.int32, np.int64]), "label_dtype")
        target = rng.integers(0, c, n).astype(label_dtype)
    else:  # one-hot rows (for c = 0, rows without classes)
        target = np.zeros((n, c), dtype)
        if c:
            target[np.arange(n), rng.integers(0, c, n)] = 1
    hits, weight = kernels.top_k_hits(prediction, target, k, sample_weight=weights)
    expected_hits, expected_weight = reference.top_k_hits(prediction, target, k, weights)
    np.testing.assert_allclose([hits, weight], [expected_hits, expected_weight], rtol=1e-12)
    if weights is None:
        assert (hits, weight) == (expected_hits, expected_weight)


def test_top_k_hits_are_the_same_for_every_thread_count():
    rng = np.random.default_rng(4)
    prediction = rng.random((20011, 13)).astype(np.float32)
    labels = rng.integers(0, 13, 20011)
    weights = rng.uniform(0.0, 2.0, 20011).astype(np.float32)
    results = {
        kernels.top_k_hits(prediction, labels, 4, sample_weight=weights, num_threads=t)
        for t in THREAD_COUNTS
    }
    assert len(results) == 1
    (hits, weight), expected = results.pop(), reference.top_k_hits(prediction, labels, 4, weights)
    np.testing.assert_allclose([hits, weight], expected, rtol=1e-12)


def test_rejections_name_the_argument():
    p = np.full((4, 3), 0.5)
    t = np.zeros((4, 3))
    th = np.array([0.2, 0.5])
    labels = np.array([0, 1, 2, 0])
    counts = kernels.confusion_counts
    hits = kernels.top_k_hits
    cases = [
        (lambda: counts(p[None], t[None], th), ValueError, "prediction"),
        (lambda: counts(p.astype(np.int64), t, th), TypeError, "prediction"),
        (lambda: counts(p, t[:3], th), ValueError, "target"),
        (lambda: counts(p, t.astype(np.float32), th), TypeError, "target"),
        (lambda: counts(p, t, th[::-1]), ValueError, "thresholds"),
        (lambda: counts(p, t, np.array([0.1, np.nan])), ValueError, "thresholds"),
        (lambda: counts(p, t, th.astype(np.float32)), TypeError, "thresholds"),
        (lambda: counts(p, t, th[None]), ValueError, "thresholds"),
        (lambda: counts(p, t, th, sample_weight=np.ones(3)), ValueError, "sample_weight"),
        (lambda: counts(p, t, th, column_weight=np.ones(4)), ValueError, "column_weight"),
        (lambda: counts(p, t, th, top_k=0), ValueError, "top_k"),
        (lambda: counts(p, t, th, top_k=True), TypeError, "top_k"),
        (lambda: counts(p, t, th, class_id=3), ValueError, "class_id"),
        (lambda: counts(p, t, th, class_id=-1), ValueError, "class_id"),
        (lambda: counts(p, t, th, multi_label=1), TypeError, "multi_label"),
        (lambda: counts(p, t, th, out=np.zeros((4, 2), np.float32)), TypeError, "out"),
        (lambda: counts(p, t, th, out=np.zeros((4, 3))), ValueError, "out"),
        (lambda: counts(p, t, th, out=np.zeros((4, 4))[:, :2]), ValueError, "out"),
        (lambda: counts(p, t, th, accumulate=True), ValueError, "out"),
        (lambda: counts(p, t, np.zeros(3), out=p[:4, :3]), ValueError, "out"),
        (lambda: counts(p, t, th, num_threads=0), ValueError, "num_threads"),
        (lambda: hits(p[0], labels, 1), ValueError, "prediction"),
        (lambda: hits(p, np.array([0, 1, 3, 0]), 1), ValueError, "target"),
        (lambda: hits(p, labels[:3], 1), ValueError, "target"),
        (lambda: hits(p, labels.astype(np.uint8), 1), TypeError, "target"),
        (lambda: hits(p, t.astype(np.float32), 1), TypeError, "target"),
        (lambda: hits(p, labels, 0), ValueError, "k"),
        (lambda: hits(p, labels, 1.0), TypeError, "k"),
        (lambda: hits(p, labels, 1, sample_weight=np.ones(5)), ValueError, "sample_weight"),
    ]
    for call, error, argument in cases:
        with pytest.raises(error) as info:
            call()
        assert str(info.value).startswith(argument + ":"), str(info.value)
