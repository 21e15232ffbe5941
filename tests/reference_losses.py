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
    eps = 1e-7  # Keras's backend.epsilon()
    if name == "mape":
        scale = 100.0 / np.maximum(np.abs(t), eps)
        return scale * np.abs(e), scale * np.sign(e)
    if name == "msle":
        pc = np.maximum(p, eps)
        diff = np.log1p(pc) - np.log1p(np.maximum(t, eps))
        return diff * diff, np.where(p < eps, 0.0, 2.0 * diff / (pc + 1.0))
    if name == "log_cosh":
        a = np.abs(e)
        return a + np.log1p(np.exp(-2.0 * a)) - np.log(2.0), np.tanh(e)
    if name == "poisson":
        return p - t * np.log(p + eps), 1.0 - t / (p + eps)
    if name == "kl_divergence":
        tc = np.clip(t, eps, 1.0)
        inside = (p >= eps) & (p <= 1.0)
        pc = np.clip(p, eps, 1.0)
        return tc * np.log(tc / pc), np.where(inside, -tc / pc, 0.0)
    if name in ("hinge", "squared_hinge"):
        margin = 1.0 - t * p
        m = np.maximum(margin, 0.0)
        if name == "hinge":
            return m, np.where(margin > 0, -t, 0.0)
        return m * m, -2.0 * t * m
    if name == "sigmoid_focal_cross_entropy":
        ls = params.get("label_smoothing", 0.0)
        alpha, gamma = params.get("alpha", 0.25), params.get("gamma", 2.0)
        t = t * (1.0 - ls) + 0.5 * ls
        sigmoid, sigmoid_low = 1.0 / (1.0 + np.exp(-p)), 1.0 / (1.0 + np.exp(p))  # s, 1 - s
        bce = np.maximum(p, 0.0) - p * t + np.log1p(np.exp(-np.abs(p)))
        q = t * sigmoid_low + (1.0 - t) * sigmoid
        balanced = params.get("apply_class_balancing", False)
        weight = t * alpha + (1.0 - t) * (1.0 - alpha) if balanced else 1.0
        slope = gamma * q ** (gamma - 1.0) if gamma != 0 else 0.0
        grad = weight * (
            slope * (1.0 - 2.0 * t) * sigmoid * sigmoid_low * bce + q**gamma * (sigmoid - t)
        )
        return weight * q**gamma * bce, grad
    raise ValueError(f"unknown elementwise loss {name!r}")


# Losses whose per-sample loss sums over the row instead of averaging it.
ROW_SUMS = ("kl_divergence",)
# Losses of a whole row (per-sample value and gradient from _row_loss).
ROW_LOSSES = ("categorical_hinge", "cosine_similarity", "softmax_focal_cross_entropy")


def _row_loss(name: str, p: np.ndarray, t: np.ndarray, params: dict):
    """Per-sample losses (n,) and d(per-sample loss)/dp (n, d) of a row loss."""
    n = p.shape[0]
    if name == "categorical_hinge":
        pos = (t * p).sum(axis=1)
        candidates = (1.0 - t) * p
        k = candidates.argmax(axis=1)
        neg = candidates[np.arange(n), k]
        margin = neg - pos + 1.0
        grad = np.where(margin[:, None] > 0, -t, 0.0)
        active = margin > 0
        grad[np.arange(n)[active], k[active]] += 1.0 - t[np.arange(n)[active], k[active]]
        return np.maximum(margin, 0.0), grad
    if name == "cosine_similarity":
        eps = 1e-7
        a = np.minimum(1.0 / np.sqrt((t * t).sum(axis=1)), 1.0 / eps)
        inverse_p = 1.0 / np.sqrt((p * p).sum(axis=1))
        b = np.minimum(inverse_p, 1.0 / eps)
        tp = (t * p).sum(axis=1)
        cubic = np.where(inverse_p < 1.0 / eps, tp * b**3, 0.0)
        grad = -a[:, None] * (t * b[:, None] - cubic[:, None] * p)
        return -tp * a * b, grad
    if name == "softmax_focal_cross_entropy":
        ls = params.get("label_smoothing", 0.0)
        alpha, gamma = params.get("alpha", 0.25), params.get("gamma", 2.0)
        t = t * (1.0 - ls) + ls / p.shape[1]
        m = p.max(axis=1, keepdims=True)
        e = np.exp(p - m)
        s = e.sum(axis=1, keepdims=True)
        prob, rest = e / s, (s - e) / s
        log_loss = np.log(s) - (p - m)
        power = rest**gamma
        slope = gamma * rest ** (gamma - 1.0) if gamma != 0 else np.zeros_like(rest)
        a = slope * prob * log_loss + power
        grad = alpha * (prob * (t * a).sum(axis=1, keepdims=True) - t * a)
        return alpha * (t * power * log_loss).sum(axis=1), grad
    raise ValueError(f"unknown row loss {name!r}")


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
            elif name in ROW_LOSSES:
                losses, grad = _row_loss(name, p, t, params)
            else:
                values, derivatives = _elementwise(name, p, t, params)
                divisor = 1 if name in ROW_SUMS else d
                losses, grad = values.sum(axis=1) / divisor, derivatives / divisor
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
