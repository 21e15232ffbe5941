"""A float64 NumPy multilayer perceptron: the slow, obvious reference of the model layer.

Written from the formulas (Keras's loss conventions, torch's optimizer rules), sharing nothing
with densekit but the activation formulas of ``tests/reference.py``. ``layers`` is a list of
(kernel, bias or None, activation name, alpha) tuples; dropout is given as explicit masks.
"""

from __future__ import annotations

import math

import numpy as np

from . import reference


def forward(layers, x, masks=None):
    """Outputs of every layer: returns (pre-activations, activations); activations[0] = x.
    ``masks[i]``, if given, multiplies the output of layer i (inverted dropout)."""
    preacts, acts = [], [np.asarray(x, np.float64)]
    for i, (w, b, name, alpha) in enumerate(layers):
        z = acts[-1] @ w + (0.0 if b is None else b)
        a = reference.activation(z, name, alpha)
        if masks is not None and masks[i] is not None:
            a = a * masks[i]
        preacts.append(z)
        acts.append(a)
    return preacts, acts


def backward(layers, preacts, acts, doutput, masks=None):
    """Gradients [dkernel, dbias, ...] in Keras's order from d(loss)/d(output)."""
    grads = []
    dy = doutput
    for i in range(len(layers) - 1, -1, -1):
        w, b, name, alpha = layers[i]
        if masks is not None and masks[i] is not None:
            dy = dy * masks[i]
        dz = reference.activation_grad(dy, preacts[i], name, alpha)
        layer_grads = [acts[i].T @ dz]
        if b is not None:
            layer_grads.append(dz.sum(axis=0))
        grads = layer_grads + grads
        dy = dz @ w.T
    return grads


def _sigmoid(z):
    return reference.sigmoid(z)


def _log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss_and_grad(name, prediction, target, sample_weight=None, delta=1.0, label_smoothing=0.0):
    """Keras's "sum_over_batch_size" loss and its gradient wrt the prediction (logits for the
    cross-entropies). Per-sample loss: mean over the last axis for elementwise losses."""
    p = np.asarray(prediction, np.float64)
    n, width = p.shape
    if name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        if name == "sparse_categorical_crossentropy":
            t = np.zeros_like(p)
            t[np.arange(n), np.asarray(target)] = 1.0
        else:
            t = np.asarray(target, np.float64)
        t = t * (1 - label_smoothing) + label_smoothing / width
        log_q = _log_softmax(p)
        per_sample = -(t * log_q).sum(axis=1)
        dper = np.exp(log_q) * t.sum(axis=1, keepdims=True) - t
    else:
        t = np.asarray(target, np.float64).reshape(p.shape)
        r = p - t
        if name == "mse":
            elementwise, delement = r * r, 2 * r
        elif name == "mae":
            elementwise, delement = np.abs(r), np.sign(r)
        elif name == "huber":
            small = np.abs(r) <= delta
            elementwise = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
            delement = np.where(small, r, delta * np.sign(r))
        elif name == "binary_crossentropy":
            t = t * (1 - label_smoothing) + 0.5 * label_smoothing
            elementwise = np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
            delement = _sigmoid(p) - t
        else:
            raise ValueError(name)
        per_sample = elementwise.mean(axis=1)
        dper = delement / width
    weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    loss = float((per_sample * weights).sum() / n)
    return loss, dper * weights[:, None] / n


def gradients(layers, x, name, target, sample_weight=None, **options):
    """The loss of the network's last activation and the gradients [dkernel, dbias, ...]:
    forward, loss_and_grad, backward."""
    preacts, acts = forward(layers, x)
    loss, doutput = loss_and_grad(name, acts[-1], target, sample_weight, **options)
    return loss, backward(layers, preacts, acts, doutput)


def l2_penalty(layers, factors):
    return sum(f * float((w * w).sum()) for (w, _, _, _), f in zip(layers, factors) if f)


def add_l2_grads(layers, grads, factors):
    index = 0
    for (w, b, _, _), f in zip(layers, factors):
        if f:
            grads[index] = grads[index] + 2 * f * w
        index += 1 if b is None else 2


def clip_by_global_norm(grads, max_norm):
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    if norm > max_norm:
        grads = [g * (max_norm / norm) for g in grads]
    return grads


class Adam:
    """Keras 3's Adam / AdamW (decoupled weight decay; epsilon added to sqrt(v) before the
    bias corrections)."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.params, self.lr, self.beta1, self.beta2 = params, lr, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        bc1, bc2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            p *= 1 - lr * self.weight_decay
            m[...] = self.beta1 * m + (1 - self.beta1) * g
            v[...] = self.beta2 * v + (1 - self.beta2) * g * g
            p -= (lr * math.sqrt(bc2) / bc1) * m / (np.sqrt(v) + self.eps)


class SGD:
    """Keras 3's SGD: the velocity holds -lr * g (momentum * velocity - lr * g), Nesterov."""

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False):
        self.params, self.lr, self.momentum, self.nesterov = params, lr, momentum, nesterov
        self.velocities = [np.zeros_like(p) for p in params]

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        for p, g, velocity in zip(self.params, grads, self.velocities):
            if not self.momentum:
                p -= lr * g
                continue
            velocity[...] = self.momentum * velocity - lr * g
            p += self.momentum * velocity - lr * g if self.nesterov else velocity


class RMSprop:
    """Keras 3's RMSprop (alpha is its rho): lr * g / sqrt(avg(g**2) + eps), optionally
    centered, the momentum buffer accumulating these lr-scaled steps."""

    def __init__(self, params, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.0, centered=False):
        self.params, self.lr, self.alpha, self.eps = params, lr, alpha, eps
        self.momentum, self.centered = momentum, centered
        self.square = [np.zeros_like(p) for p in params]
        self.mean = [np.zeros_like(p) for p in params]
        self.buffers = [np.zeros_like(p) for p in params]

    def step(self, grads, lr=None):
        lr = self.lr if lr is None else lr
        for p, g, s, a, buf in zip(self.params, grads, self.square, self.mean, self.buffers):
            s[...] = self.alpha * s + (1 - self.alpha) * g * g
            variance = s
            if self.centered:
                a[...] = self.alpha * a + (1 - self.alpha) * g
                variance = s - a * a
            increment = lr * g / np.sqrt(variance + self.eps)
            if self.momentum:
                buf[...] = self.momentum * buf + increment
                p -= buf
            else:
                p -= increment
