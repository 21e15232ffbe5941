"""Float64 NumPy references for the activation and dense kernels (slow, obvious, trusted)."""

from __future__ import annotations

import math

import numpy as np

_erfc = np.frompyfunc(math.erfc, 1, 1)

DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}


def erfc(z: np.ndarray) -> np.ndarray:
    return _erfc(np.asarray(z, dtype=np.float64)).astype(np.float64)


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def softplus(z):
    return np.logaddexp(0.0, z)


def log_softmax(z):
    if z.size == 0:
        return z.copy()
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def activation(z, name, alpha=None):
    z = np.asarray(z, dtype=np.float64)
    if alpha is None:
        alpha = DEFAULT_ALPHA.get(name, 0.0)
    if name == "linear":
        return z.copy()
    if name == "relu":
        return np.where((z > 0) | np.isnan(z), z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    if name == "gelu":
        return 0.5 * z * erfc(-z / math.sqrt(2.0))
    if name == "gelu_tanh":
        inner = math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)
        return z * sigmoid(2.0 * inner)
    if name == "softmax":
        if z.size == 0:
            return z.copy()
        shifted = z - z.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=-1, keepdims=True)
    if name == "silu":
        return z * sigmoid(z)
    if name == "selu":
        return np.where(z > 0, SELU_SCALE * z, SELU_SCALE * SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if name == "relu6":
        return np.minimum(np.maximum(z, 0.0), 6.0)
    if name == "hard_sigmoid":
        return np.minimum(np.maximum(z + 3.0, 0.0), 6.0) / 6.0
    if name == "softsign":
        return z / (1.0 + np.abs(z))
    if name == "mish":
        return z * np.tanh(softplus(z))
    if name == "log_softmax":
        return log_softmax(z)
    if name == "exponential":
        with np.errstate(over="ignore"):
            return np.exp(z)
    raise ValueError(name)


def activation_grad(dy, z, name, alpha=None):
    """dz = dy * f'(z) in float64 (softmax: the row Jacobian-vector product)."""
    dy = np.asarray(dy, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if alpha is None:
        alpha = DEFAULT_ALPHA.get(name, 0.0)
    if name == "linear":
        return dy.copy()
    if name == "relu":
        return dy * (z > 0)
    if name == "leaky_relu":
        return dy * np.where(z > 0, 1.0, alpha)
    if name == "elu":
        return dy * np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0)))
    if name == "sigmoid":
        s = sigmoid(z)
        return dy * s * (1 - s)
    if name == "tanh":
        return dy * (1 - np.tanh(z) ** 2)
    if name == "softplus":
        return dy * sigmoid(z)
    if name == "gelu":
        cdf = 0.5 * erfc(-z / math.sqrt(2.0))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return dy * (cdf + z * pdf)
    if name == "gelu_tanh":
        c = math.sqrt(2.0 / math.pi)
        inner = c * (z + 0.044715 * z**3)
        s = sigmoid(2.0 * inner)
        return dy * (s + 2.0 * z * s * (1 - s) * c * (1 + 3 * 0.044715 * z * z))
    if name == "softmax":
        y = activation(z, "softmax")
        return y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    if name == "silu":
        s = sigmoid(z)
        return dy * s * (1 + z * sigmoid(-z))
    if name == "selu":
        return dy * np.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0)))
    if name == "relu6":
        return dy * ((z > 0) & (z < 6))
    if name == "hard_sigmoid":
        return dy * ((z > -3) & (z < 3)) / 6.0
    if name == "softsign":
        return dy / (1.0 + np.abs(z)) ** 2
    if name == "mish":
        t = np.tanh(softplus(z))
        return dy * (t + z * sigmoid(z) * (1 - t * t))
    if name == "log_softmax":
        return dy - activation(z, "softmax") * dy.sum(axis=-1, keepdims=True)
    if name == "exponential":
        with np.errstate(over="ignore"):
            return dy * np.exp(z)
    raise ValueError(name)


def dense_forward(x, w, b=None, name="linear", alpha=None):
    """(y, preact) of y = f(x @ w + b) in float64."""
    z = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    if b is not None:
        z = z + np.asarray(b, np.float64)
    return activation(z, name, alpha), z


def dense_backward(dy, x, w, z, name="linear", alpha=None):
    """(dx, dw, db) in float64 given the pre-activation z."""
    k = np.shape(x)[-1]
    x2 = np.asarray(x, np.float64).reshape(int(np.prod(np.shape(x)[:-1])), k)
    rows = int(np.prod(np.shape(dy)[:-1]))
    dz = activation_grad(dy, z, name, alpha).reshape(rows, np.shape(w)[1])
    dx = (dz @ np.asarray(w, np.float64).T).reshape(np.shape(x))
    return dx, x2.T @ dz, dz.sum(axis=0)


def relu(z, max_value=None, negative_slope=0.0, threshold=0.0):
    """Keras's relu(z, negative_slope, max_value, threshold) in float64."""
    z = np.asarray(z, np.float64)
    cap = np.inf if max_value is None else max_value
    with np.errstate(invalid="ignore"):
        below = negative_slope * (z - threshold) if negative_slope else np.zeros_like(z)
    return np.where(z > threshold, np.minimum(z, cap), np.where(z < threshold, below, 0.0 * z))


def relu_grad(dy, z, max_value=None, negative_slope=0.0, threshold=0.0):
    """dz = dy * relu'(z): 1 for threshold < z <= max_value, negative_slope below the
    threshold, 0 elsewhere."""
    z = np.asarray(z, np.float64)
    cap = np.inf if max_value is None else max_value
    slope = np.where(z > threshold, (z <= cap) * 1.0, np.where(z < threshold, negative_slope, 0.0))
    return np.asarray(dy, np.float64) * slope
