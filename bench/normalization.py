"""Normalization layers' kernels against torch (F.batch_norm, F.layer_norm, forward and
backward through autograd) and NumPy.

Memory-bound, so reported in GB/s, counting the minimum traffic of x (n, k) of s-byte elements:
  training step (forward + backward): 5 n k s (read x, write y; read dy and x, write dx);
  batch norm inference (moving statistics): 2 n k s (read x, write y).
epsilon 1e-3 (Keras's default); gamma and beta given, their gradients computed.
Run alone: python -m bench.normalization [options].
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from densekit import kernels

from . import peers
from .config import Settings
from .harness import Case, Impl, Skip, Tolerance, random_array

FAMILY = "normalization"
SHAPES = ((65536, 64), (8192, 512), (1024, 1024))
QUICK_SHAPES = ((65536, 64), (8192, 512))
EPSILON = 1e-3
TOLERANCE = {
    "float32": Tolerance(rtol=2e-4, atol=2e-5),
    "float64": Tolerance(rtol=1e-9, atol=1e-11),
}


def _arrays(n: int, k: int, dtype: str):
    rng = np.random.default_rng(n * 7 + k)
    x = random_array(rng, (n, k), dtype) * 3 + 1
    dy = random_array(rng, (n, k), dtype)
    gamma = random_array(rng, (k,), dtype) + 1
    beta = random_array(rng, (k,), dtype)
    return x, dy, gamma, beta


def _torch_training(kind: str, x, dy, gamma, beta) -> list[Impl]:
    """torch's forward + backward of F.batch_norm (training) or F.layer_norm as a peer."""
    if peers.torch is None:
        return []
    torch, functional = peers.torch, peers.torch.nn.functional
    x_t = torch.from_numpy(x).requires_grad_()
    gamma_t = torch.from_numpy(gamma).requires_grad_()
    beta_t = torch.from_numpy(beta).requires_grad_()
    dy_t = torch.from_numpy(dy)

    def run_torch():
        for t in (x_t, gamma_t, beta_t):
            t.grad = None
        if kind == "batch":
            y = functional.batch_norm(x_t, None, None, gamma_t, beta_t, True, 0.0, EPSILON)
        else:
            y = functional.layer_norm(x_t, (x.shape[1],), gamma_t, beta_t, EPSILON)
        y.backward(dy_t)
        return y, x_t.grad, gamma_t.grad, beta_t.grad

    return [Impl("torch", run_torch)]


def training_case(kind: str, n: int, k: int, dtype: str, threads: int) -> Case:
    x, dy, gamma, beta = _arrays(n, k, dtype)
    y, dx = np.empty_like(x), np.empty_like(x)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(beta)
    axis = 0 if kind == "batch" else 1

    if kind == "batch":
        mean, variance = np.empty_like(gamma), np.empty_like(gamma)

        def run_densekit():
            kernels.batch_norm_forward(
                x, gamma, beta, training=True, epsilon=EPSILON, out=y, mean_out=mean,
                variance_out=variance, num_threads=threads,
            )  # fmt: skip
            kernels.batch_norm_backward(
                dy, x, gamma, mean, variance, training=True, epsilon=EPSILON, dx_out=dx,
                dgamma_out=dgamma, dbeta_out=dbeta, num_threads=threads,
            )  # fmt: skip
            return y, dx, dgamma, dbeta
    else:
        mean, inv_std = np.empty(n, dtype), np.empty(n, dtype)

        def run_densekit():
            kernels.layer_norm_forward(
                x, gamma, beta, epsilon=EPSILON, out=y, mean_out=mean, inv_std_out=inv_std,
                num_threads=threads,
            )  # fmt: skip
            kernels.layer_norm_backward(
                dy, x, gamma, mean, inv_std, dx_out=dx, dgamma_out=dgamma, dbeta_out=dbeta,
                num_threads=threads,
            )  # fmt: skip
            return y, dx, dgamma, dbeta

    def run_numpy():
        mu = x.mean(axis=axis, keepdims=True)
        inv = 1 / np.sqrt(x.var(axis=axis, keepdims=True) + EPSILON)
        xhat = (x - mu) * inv
        out = xhat * gamma + beta
        g = dy * gamma
        grad_x = inv * (
            g - g.mean(axis=axis, keepdims=True) - xhat * (g * xhat).mean(axis=axis, keepdims=True)
        )
        return out, grad_x, (dy * xhat).sum(axis=0), dy.sum(axis=0)

    itemsize = np.dtype(dtype).itemsize
    return Case(
        family=FAMILY,
        name=f"{kind} norm train",
        shape=f"{n}x{k}",
        dtype=dtype,
        threads=threads,
        work=5.0 * n * k * itemsize,
        unit="GB/s",
        work_formula="5*n*k*itemsize (read x, write y; read dy, x, write dx)",
        tolerance=TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=[Impl("numpy", run_numpy), *_torch_training(kind, x, dy, gamma, beta)],
        notes=[f"forward + backward (dx, dgamma, dbeta); torch: F.{kind}_norm + autograd backward"],
    )


def inference_case(n: int, k: int, dtype: str, threads: int) -> Case:
    x, _, gamma, beta = _arrays(n, k, dtype)
    rng = np.random.default_rng(k)
    moving_mean = random_array(rng, (k,), dtype)
    moving_variance = random_array(rng, (k,), dtype) + 2
    y = np.empty_like(x)

    def run_densekit():
        return kernels.batch_norm_forward(
            x, gamma, beta, moving_mean, moving_variance, training=False, epsilon=EPSILON,
            out=y, num_threads=threads,
        )  # fmt: skip

    def run_numpy():
        return (x - moving_mean) / np.sqrt(moving_variance + EPSILON) * gamma + beta

    case_peers = [Impl("numpy", run_numpy)]
    if peers.torch is not None:
        torch = peers.torch
        tensors = [torch.from_numpy(a) for a in (x, moving_mean, moving_variance, gamma, beta)]

        def run_torch():
            with torch.no_grad():
                return torch.nn.functional.batch_norm(
                    *tensors[:3], tensors[3], tensors[4], False, 0.0, EPSILON
                )

        case_peers.append(Impl("torch", run_torch))
    return Case(
        family=FAMILY,
        name="batch norm infer",
        shape=f"{n}x{k}",
        dtype=dtype,
        threads=threads,
        work=2.0 * n * k * np.dtype(dtype).itemsize,
        unit="GB/s",
        work_formula="2*n*k*itemsize (read x, write y)",
        tolerance=TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=case_peers,
        notes=["moving statistics; torch: F.batch_norm(training=False) under no_grad"],
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    if not hasattr(kernels, "batch_norm_forward"):
        yield Skip(FAMILY, "normalization", "densekit.kernels has no batch_norm_forward")
        return
    shapes = QUICK_SHAPES if settings.quick else SHAPES
    for dtype in settings.dtypes():
        for n, k in shapes:
            yield training_case("batch", n, k, dtype, settings.threads)
            yield training_case("layer", n, k, dtype, settings.threads)
            yield inference_case(n, k, dtype, settings.threads)


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
