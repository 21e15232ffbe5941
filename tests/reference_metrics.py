"""Float64 NumPy references of densekit's metric kernels: every element compared with every
threshold, nothing bucketed or chunked.

``confusion_counts`` and ``top_k_hits`` mirror the kernels' arguments; float32 inputs are
widened exactly, so the comparisons decide as the kernels' comparisons in the input dtype.
"""

from __future__ import annotations

import numpy as np


def _rows(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(a.shape[0], 1) if a.ndim == 1 else a


def top_k_mask(prediction: np.ndarray, k: int) -> np.ndarray:
    """Whether each element is among the k first of its row in a descending sort that puts
    NaN first and breaks ties toward the lower column."""
    n, d = prediction.shape
    nan = np.isnan(prediction)
    value = np.where(nan, 0.0, prediction)
    column = np.broadcast_to(np.arange(d), (n, d))
    # lexsort sorts by the last key first: NaN first, then larger values, then lower columns
    order = np.lexsort((column, -value, ~nan), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(d), (n, d)), axis=1)
    return rank < k


def confusion_counts(
    prediction,
    target,
    thresholds,
    sample_weight=None,
    column_weight=None,
    top_k=None,
    class_id=None,
    multi_label=False,
) -> np.ndarray:
    """(4, T) or, with ``multi_label``, (4, T, L): the weighted true positives, false
    positives, true negatives and false negatives at each threshold."""
    p, t = _rows(prediction), _rows(target)
    n, d = p.shape
    weights = np.ones((n, d))
    if sample_weight is not None:
        weights = weights * np.asarray(sample_weight, np.float64)[:, None]
    if column_weight is not None:
        weights = weights * np.asarray(column_weight, np.float64)[None, :]
    in_top = np.ones((n, d), bool) if top_k is None else top_k_mask(p, top_k)
    if class_id is not None:
        p, t, weights, in_top = (a[:, class_id : class_id + 1] for a in (p, t, weights, in_top))
    th = np.asarray(thresholds, np.float64)
    above = (p[:, :, None] > th) & in_top[:, :, None]  # (n, columns, T)
    positive = (t != 0)[:, :, None]
    w = weights[:, :, None]
    axes = 0 if multi_label else (0, 1)
    counts = [
        np.sum(w * (positive & above), axis=axes),
        np.sum(w * (~positive & above), axis=axes),
        np.sum(w * (~positive & ~above), axis=axes),
        np.sum(w * (positive & ~above), axis=axes),
    ]
    if multi_label:
        return np.stack([c.T for c in counts])  # (columns, T) -> (T, columns)
    return np.stack(counts)


def top_k_hits(prediction, target, k: int, sample_weight=None) -> tuple[float, float]:
    """(weighted hits, weight): a row is a hit when fewer than k of its predictions are
    greater than (or NaN beside) its target's, which is not NaN."""
    p = np.asarray(prediction, np.float64)
    n, c = p.shape
    weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    if c == 0:
        return 0.0, float(weights.sum())
    target = np.asarray(target)
    labels = target if target.ndim == 1 else np.argmax(target, axis=1)
    value = p[np.arange(n), labels]
    greater = np.count_nonzero((p > value[:, None]) | np.isnan(p), axis=1)
    hit = ~np.isnan(value) & (greater < k)
    return float(np.sum(weights * hit)), float(weights.sum())
