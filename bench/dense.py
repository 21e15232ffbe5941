"""Dense layer y = act(x @ w + b): the fused forward (bias + relu, bias + gelu), the backward
(dx, dw, db) with relu, and forward + backward together (relu, gelu) against torch's autograd.

Shapes are (n, k, m): x is (n, k), w is (k, m) (Keras layout), b is (m,), y is (n, m).
FLOPs: forward 2 n k m, backward 4 n k m (dx and dw), forward + backward 6 n k m; the bias,
activation and db passes are not counted.
Run alone: python -m bench.dense [options].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from densekit import kernels

from . import peers
from .config import Settings
from .gemm import MLP_SHAPES, PRODUCT_TOLERANCE, product_case, shape_name
from .harness import Case, Impl, Skip, Tolerance, grid_array, random_array

FAMILY = "dense"
# Without scipy, NumPy's gelu is the tanh approximation, up to ~5e-4 from the exact one.
GELU_TANH_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-3)
QUICK_MAX_FLOP = 1e9  # per call: --quick keeps the 784 -> 256 layers (gemm has the rest)


def _numpy_gelu(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Exact gelu 0.5 z (1 + erf(z / sqrt 2)) with scipy's erf, else the tanh approximation."""
    if peers.scipy_special is not None:
        np.multiply(z, 1 / math.sqrt(2), out=out)
        peers.scipy_special.erf(out, out=out)
    else:
        np.multiply(z, z, out=out)
        out *= 0.044715
        out += 1
        out *= z
        out *= math.sqrt(2 / math.pi)
        np.tanh(out, out=out)
    out += 1
    out *= z
    out *= 0.5
    return out


def fused_forward_case(
    n: int,
    k: int,
    m: int,
    dtype: str,
    activation: str,
    threads: int,
    peer_names: tuple[str, ...] = ("numpy", "torch"),
    packed: bool = False,
) -> Case:
    """packed: densekit gets kernels.pack_weights(w), made once (inference on fixed weights)."""
    rng = np.random.default_rng(n * 31 + k * 7 + m)
    x = random_array(rng, (n, k), dtype)
    w = random_array(rng, (k, m), dtype)
    b = random_array(rng, (m,), dtype)
    w_densekit = kernels.pack_weights(w, num_threads=threads) if packed else w
    y = {lib: np.empty((n, m), dtype) for lib in ("densekit", *peer_names)}
    notes = []
    tolerance = PRODUCT_TOLERANCE[dtype]
    if activation == "gelu" and peers.scipy_special is None and "numpy" in peer_names:
        notes.append("NumPy gelu uses the tanh approximation (scipy not importable)")
        tolerance = GELU_TANH_TOLERANCE

    def run_densekit():
        return kernels.dense_forward(
            x, w_densekit, b, activation, out=y["densekit"], num_threads=threads
        )

    def run_numpy():
        z = np.matmul(x, w, out=y["numpy"])
        z += b
        if activation == "relu":
            return np.maximum(z, 0, out=z)
        scratch = y["numpy-scratch"]
        _numpy_gelu(z, scratch)
        return scratch

    case_peers = []
    if "numpy" in peer_names:
        if activation == "gelu":
            y["numpy-scratch"] = np.empty((n, m), dtype)
        case_peers.append(Impl("numpy", run_numpy))
    if "torch" in peer_names and peers.torch is not None:
        functional = peers.torch.nn.functional
        x_t, b_t = peers.torch.from_numpy(x), peers.torch.from_numpy(b)
        w_t = peers.torch.from_numpy(np.ascontiguousarray(w.T))  # torch stores (m, k)

        def run_torch():
            z = functional.linear(x_t, w_t, b_t)
            if activation == "relu":
                return functional.relu(z, inplace=True)
            return functional.gelu(z)

        case_peers.append(Impl("torch", run_torch))

    if packed:
        notes.append("densekit: w packed once beforehand (pack_weights), not timed")
    return product_case(
        FAMILY,
        f"dense {activation}" + (" packed" if packed else ""),
        n,
        k,
        m,
        dtype,
        threads,
        2,
        "2*n*k*m",
        Impl("densekit", run_densekit),
        case_peers,
        tolerance,
        notes,
    )


def backward_case(n: int, k: int, m: int, dtype: str, threads: int) -> Case:
    """dense_backward with relu (derivative from y) against the NumPy formulas."""
    rng = np.random.default_rng(n * 31 + k * 7 + m + 1)
    x = random_array(rng, (n, k), dtype)
    w = random_array(rng, (k, m), dtype)
    b = random_array(rng, (m,), dtype)
    dy = random_array(rng, (n, m), dtype)
    y = kernels.dense_forward(x, w, b, "relu")
    dx, dw, db = {}, {}, {}
    for lib in ("densekit", "numpy"):
        dx[lib], dw[lib], db[lib] = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    mask = np.empty((n, m), bool)
    dz = np.empty((n, m), dtype)
    w_t, x_t = w.T, x.T

    def run_densekit():
        return kernels.dense_backward(
            dy,
            x,
            w,
            y=y,
            activation="relu",
            dx_out=dx["densekit"],
            dw_out=dw["densekit"],
            db_out=db["densekit"],
            num_threads=threads,
        )

    def run_numpy():
        np.greater(y, 0, out=mask)
        np.multiply(dy, mask, out=dz)
        np.matmul(dz, w_t, out=dx["numpy"])
        np.matmul(x_t, dz, out=dw["numpy"])
        np.sum(dz, axis=0, out=db["numpy"])
        return dx["numpy"], dw["numpy"], db["numpy"]

    return product_case(
        FAMILY,
        "backward relu",
        n,
        k,
        m,
        dtype,
        threads,
        4,
        "4*n*k*m (dx, dw)",
        Impl("densekit", run_densekit),
        [Impl("numpy", run_numpy)],
    )


def forward_backward_case(
    n: int, k: int, m: int, dtype: str, threads: int, activation: str
) -> Case | Skip:
    """densekit forward + backward against torch's act(F.linear) with y.backward(dy): relu
    (derivative from y, folded into the products) or gelu (from the pre-activation z, which
    the forward stores)."""
    name = f"fwd+bwd {activation}"
    if peers.torch is None:
        return Skip(FAMILY, f"{name} {shape_name(n, k, m)}", "torch is not importable")
    torch, functional = peers.torch, peers.torch.nn.functional
    rng = np.random.default_rng(n * 31 + k * 7 + m + 2)
    # Values on a 1/8 grid: every library gets the same pre-activations exactly, so relu's
    # mask (and with it dx, dw, db) cannot differ by a rounding at zero.
    x = grid_array(rng, (n, k), dtype)
    w = grid_array(rng, (k, m), dtype)
    b = grid_array(rng, (m,), dtype)
    dy = grid_array(rng, (n, m), dtype)
    y = np.empty((n, m), dtype)
    z = np.empty((n, m), dtype) if activation != "relu" else None
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)

    def run_densekit():
        kernels.dense_forward(x, w, b, activation, out=y, preact_out=z, num_threads=threads)
        kernels.dense_backward(
            dy,
            x,
            w,
            y=y,
            preact=z,
            activation=activation,
            dx_out=dx,
            dw_out=dw,
            db_out=db,
            num_threads=threads,
        )
        return y, dx, dw, db

    x_t = torch.from_numpy(x).requires_grad_()
    w_t = torch.from_numpy(np.ascontiguousarray(w.T)).requires_grad_()
    b_t = torch.from_numpy(b).requires_grad_()
    dy_t = torch.from_numpy(dy)
    torch_act = functional.relu if activation == "relu" else functional.gelu

    def run_torch():
        x_t.grad = w_t.grad = b_t.grad = None
        y_t = torch_act(functional.linear(x_t, w_t, b_t))
        y_t.backward(dy_t)
        return y_t, x_t.grad, w_t.grad.T, b_t.grad

    return product_case(
        FAMILY,
        name,
        n,
        k,
        m,
        dtype,
        threads,
        6,
        "6*n*k*m (y, dx, dw)",
        Impl("densekit", run_densekit),
        [Impl("torch-autograd", run_torch)],
        notes=["torch: grads set to None each call; inputs on a 1/8 grid"],
    )


CASE_KINDS = (  # name, FLOPs per n*k*m, builder(n, k, m, dtype, threads=)
    ("dense relu", 2, functools.partial(fused_forward_case, activation="relu")),
    ("dense gelu", 2, functools.partial(fused_forward_case, activation="gelu")),
    ("backward relu", 4, backward_case),
    ("fwd+bwd relu", 6, functools.partial(forward_backward_case, activation="relu")),
    ("fwd+bwd gelu", 6, functools.partial(forward_backward_case, activation="gelu")),
)


# Inference on fixed weights, where packing w once pays (csrc/gemm/README.md): the same
# forward with w as given and with pack_weights(w).
PACKED_SHAPES = ((64, 1024, 1024), (256, 1024, 1024), (32, 2048, 2048))


def cases(settings: Settings) -> Iterator[Case | Skip]:
    for dtype in settings.dtypes():
        for name, flop_per_nkm, build in CASE_KINDS:
            for n, k, m in MLP_SHAPES:
                if settings.quick and flop_per_nkm * n * k * m > QUICK_MAX_FLOP:
                    yield Skip(FAMILY, f"{name} {shape_name(n, k, m)} {dtype}", "--quick")
                else:
                    yield build(n, k, m, dtype, threads=settings.threads)
        for n, k, m in PACKED_SHAPES:
            for packed in (False, True):
                if settings.quick and 2 * n * k * m > QUICK_MAX_FLOP:
                    label = f"dense relu{' packed' if packed else ''} {shape_name(n, k, m)} {dtype}"
                    yield Skip(FAMILY, label, "--quick")
                else:
                    yield fused_forward_case(
                        n, k, m, dtype, "relu", settings.threads, packed=packed
                    )


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
