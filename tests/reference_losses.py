"""Float64 NumPy references of densekit's loss kernels: the obvious formulas, nothing fused.

``reference_loss(name, prediction, target, ...)`` mirrors the kernels' signature and returns
``(loss, grad)`` computed in float64 from the given values (float32 inputs are widened exactly).
"""

from __future__ import annotations

import numpy as np


def _as_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], 1) if a.ndim == 1 else a


def _elementwise(name: str, p: np.ndarray, t: np.ndarray, params: dict):
    """Per-element loss values and their derivatives with respect to p."""
    e = p - t
    if name == "mse":
        return e * e, 2.0 * e
    if name == "mae":
        return np.abs(e), np.sign(e)
    if name == "huber":
        delta = params.get("delta", 1.0)
        a = np.abs(e)
        value = np.where(a <= delta, 0.5 * e * e, delta * (a - 0.5 * delta))
        return value, np.clip(e, -delta, delta)
    if name == "sigmoid_binary_cross_entropy":
        ls = params.get("label_smoothing", 0.0)
        t = t * (1.0 - ls) + 0.5 * ls
        value = np.maximum(p, 0.0) - p * t + np.log1p(np.exp(-np.abs(p)))
        small = np.exp(-np.abs(p))
        sigmoid = np.where(p >= 0, 1.0 / (1.0 + small), small / (1.0 + small))
        return value, sigmoid - t
    raise ValueError(f"unknown elementwise loss {name!r}")


def _softmax_cross_entropy(z: np.ndarray, target: np.ndarray, params: dict):
    """Per-sample losses (n,) and d(per-sample loss)/dz (n, c)."""
    n, c = z.shape
    if np.issubdtype(target.dtype, np.integer):
        t = np.zeros((n, c))
        t[np.arange(n), target] = 1.0
    else:
        t = np.asarray(target, dtype=np.float64)
    if c == 0:
        return np.zeros(n), np.zeros((n, 0))
    ls = params.get("label_smoothing", 0.0)
    t = t * (1.0 - ls) + ls / c
    m = z.max(axis=1, keepdims=True)
    exps = np.exp(z - m)
    s = exps.sum(axis=1, keepdims=True)
    lse = m + np.log(s)
    losses = (t * (lse - z)).sum(axis=1)
    grad = exps / s * t.sum(axis=1, keepdims=True) - t
    return losses, grad


def reference_loss(
    name: str,
    prediction: np.ndarray,
    target: np.ndarray,
    *,
    reduction: str = "mean",
    sample_weight: np.ndarray | None = None,
    **params,
):
    """(loss, grad) in float64: loss a float ("mean", "sum") or (n,) array ("none")."""
    n = prediction.shape[0]
    with np.errstate(all="ignore"):
        if name == "softmax_cross_entropy":
            losses, grad = _softmax_cross_entropy(
                np.asarray(prediction, dtype=np.float64), target, params
            )
        else:
            p, t = _as_rows(prediction), _as_rows(target)
            d = p.shape[1]
            if d == 0:
                losses, grad = np.zeros(n), np.zeros(p.shape)
            else:
                values, derivatives = _elementwise(name, p, t, params)
                losses, grad = values.mean(axis=1), derivatives / d
            grad = grad.reshape(prediction.shape)
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        weighted = w * losses
        row_scale = w.reshape((n,) + (1,) * (grad.ndim - 1))
        if reduction == "none":
            return weighted, grad * row_scale
        total = float(weighted.sum())
        if reduction == "sum":
            return total, grad * row_scale
        if n == 0:
            return 0.0, grad
        return total / n, grad * row_scale / n
