"""Float64 NumPy references of the optimizer rules and of global-norm clipping.

Each rule is written as in the papers and torch's documentation, not in torch's operation
order, so agreement with both torch and these shows the kernels compute the rule itself. The
functions take the kernels' arguments (minus num_threads) and update float64 arrays in place.
"""

from __future__ import annotations

import math

import numpy as np


def sgd_step(
    param,
    grad,
    *,
    lr,
    momentum=0.0,
    velocity=None,
    nesterov=False,
    weight_decay=0.0,
    dampening=0.0,
    maximize=False,
    step=None,
):
    g = (-grad if maximize else grad) + weight_decay * param
    if momentum != 0.0:
        if step == 1:
            velocity[...] = g
        else:
            velocity[...] = momentum * velocity + (1.0 - dampening) * g
        g = g + momentum * velocity if nesterov else velocity
    param -= lr * g


def adam_step(
    param,
    grad,
    m,
    v,
    *,
    step,
    lr,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    decoupled_weight_decay=False,
    v_max=None,
    maximize=False,
):
    g = -grad if maximize else grad
    if decoupled_weight_decay:
        param *= 1.0 - lr * weight_decay
    else:
        g = g + weight_decay * param
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * g * g
    second = v
    if v_max is not None:
        np.maximum(v_max, v, out=v_max)
        second = v_max
    m_hat = m / (1.0 - beta1**step)
    v_hat = second / (1.0 - beta2**step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


def rmsprop_step(
    param,
    grad,
    square_avg,
    *,
    lr,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.0,
    velocity=None,
    centered=False,
    grad_avg=None,
    maximize=False,
):
    g = (-grad if maximize else grad) + weight_decay * param
    square_avg[...] = alpha * square_avg + (1.0 - alpha) * g * g
    variance = square_avg
    if centered:
        grad_avg[...] = alpha * grad_avg + (1.0 - alpha) * g
        variance = square_avg - grad_avg * grad_avg
    update = g / (np.sqrt(variance) + eps)
    if momentum > 0.0:
        velocity[...] = momentum * velocity + update
        update = velocity
    param -= lr * update


def global_norm(grads) -> float:
    """sqrt of the sum of squares: NaN if any element is NaN, else inf if any is inf; the sum
    is exactly rounded (math.fsum) and scaled so that no square overflows."""
    values = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in grads] + [[]])
    if np.isnan(values).any():
        return math.nan
    scale = float(np.max(np.abs(values), initial=0.0))
    if scale == 0.0 or math.isinf(scale):
        return scale
    return scale * math.sqrt(math.fsum((values / scale) ** 2))


def clip_by_global_norm(grads, max_norm) -> float:
    norm = global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        for g in grads:
            g *= max_norm / norm
    return norm
