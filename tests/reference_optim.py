"""Float64 NumPy references of the optimizer rules and of global-norm clipping.

Each rule is written as in the papers and torch's and Keras's documentation, not in either
library's operation order, so agreement with both libraries and these shows the kernels compute
the rule itself. ``convention="keras"`` gives Keras 3's rule (weight decay decoupled, applied
first). The functions take the kernels' arguments (minus num_threads) and update float64 arrays
in place.
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
    convention="torch",
):
    if convention == "keras":
        g = -grad if maximize else grad
        param *= 1.0 - lr * weight_decay
        if momentum == 0.0:
            param -= lr * g
            return
        velocity[...] = momentum * velocity - lr * g
        param += momentum * velocity - lr * g if nesterov else velocity
        return
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
    decoupled_weight_decay=None,
    v_max=None,
    maximize=False,
    convention="torch",
):
    g = -grad if maximize else grad
    if decoupled_weight_decay is None:
        decoupled_weight_decay = convention == "keras"
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
    if convention == "keras":  # epsilon added before the second moment's bias correction
        param -= lr * m_hat * math.sqrt(1.0 - beta2**step) / (np.sqrt(second) + eps)
        return
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
    convention="torch",
):
    keras = convention == "keras"
    g = -grad if maximize else grad
    if keras:
        param *= 1.0 - lr * weight_decay
    else:
        g = g + weight_decay * param
    square_avg[...] = alpha * square_avg + (1.0 - alpha) * g * g
    variance = square_avg
    if centered:
        grad_avg[...] = alpha * grad_avg + (1.0 - alpha) * g
        variance = square_avg - grad_avg * grad_avg
    # Keras: lr inside the step the momentum accumulates, epsilon inside the square root.
    update = lr * g / np.sqrt(variance + eps) if keras else g / (np.sqrt(variance) + eps)
    if momentum > 0.0:
        velocity[...] = momentum * velocity + update
        update = velocity
    param -= update if keras else lr * update


def nadam_mu(beta1, momentum_decay, step):
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_step(
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
    decoupled_weight_decay=None,
    momentum_decay=None,
    mu_product=None,
    maximize=False,
    convention="torch",
):
    """Returns the product mu_1 ... mu_step, rounded after each factor as each library keeps
    it: torch in float32 (its default scalar dtype), Keras in the parameters' dtype."""
    keras = convention == "keras"
    if momentum_decay is None:
        momentum_decay = 1.0 if keras else 0.004
    if decoupled_weight_decay is None:
        decoupled_weight_decay = keras
    kept = param.dtype.type if keras else np.float32

    def times(product, factor):
        return float(kept(kept(product) * kept(factor)))

    if mu_product is None:
        mu_product = 1.0
        for t in range(1, step):
            mu_product = times(mu_product, nadam_mu(beta1, momentum_decay, t))
    g = -grad if maximize else grad
    if decoupled_weight_decay:
        param *= 1.0 - lr * weight_decay
    else:
        g = g + weight_decay * param
    mu = nadam_mu(beta1, momentum_decay, step)
    mu_next = nadam_mu(beta1, momentum_decay, step + 1)
    product = times(mu_product, mu)
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * g * g
    m_hat = mu_next * m / (1.0 - product * mu_next) + (1.0 - mu) * g / (1.0 - product)
    param -= lr * m_hat / (np.sqrt(v / (1.0 - beta2**step)) + eps)
    return product


def adamax_step(
    param,
    grad,
    m,
    u,
    *,
    step,
    lr,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    maximize=False,
    convention="torch",
):
    keras = convention == "keras"
    g = -grad if maximize else grad
    if keras:
        param *= 1.0 - lr * weight_decay
    else:
        g = g + weight_decay * param
    m[...] = beta1 * m + (1.0 - beta1) * g
    # torch puts epsilon into the norm, Keras into the denominator only.
    u[...] = np.maximum(beta2 * u, np.abs(g) if keras else np.abs(g) + eps)
    denominator = u + eps if keras else u
    param -= lr / (1.0 - beta1**step) * m / denominator


def adagrad_step(
    param,
    grad,
    sum,
    *,
    lr,
    step=None,
    lr_decay=0.0,
    eps=1e-10,
    weight_decay=0.0,
    maximize=False,
    convention="torch",
):
    keras = convention == "keras"
    g = -grad if maximize else grad
    if keras:
        param *= 1.0 - lr * weight_decay
    else:
        g = g + weight_decay * param
        lr = lr / (1.0 + ((step or 1) - 1) * lr_decay)
    sum += g * g
    param -= lr * g / (np.sqrt(sum + eps) if keras else np.sqrt(sum) + eps)


def lion_step(param, grad, m, *, lr, beta1=0.9, beta2=0.99, weight_decay=0.0, maximize=False):
    g = -grad if maximize else grad
    param *= 1.0 - lr * weight_decay
    param -= lr * np.sign(np.nan_to_num(beta1 * m + (1.0 - beta1) * g, nan=0.0))
    m[...] = beta2 * m + (1.0 - beta2) * g


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
