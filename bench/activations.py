"""Activations alone: forward (activation_forward) and backward (activation_backward, the
derivative from y where the table allows it, else from z) of every activation in the table
against torch's functional form and its autograd backward on the same array.

Memory-bound, so reported in GB/s: forward 2 N s (read z, write y), backward 3 N s (read dy
and y or z, write dz); N elements of s bytes, shape (rows, cols), row activations over cols.
The row activations' forward runs on rows of 10 too (a classifier's output). The ReLU layer's
kernels (relu_forward, relu_backward) run its forms that no fused activation has: a cap of 6
(torch relu6), a slope of 0.2 (leaky_relu), a threshold of 0.5 (threshold).
Run alone: python -m bench.activations [options].
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from densekit import kernels

from . import peers
from .config import Settings
from .harness import Case, Impl, Skip, Tolerance, random_array

FAMILY = "activations"
SHAPE = (4096, 1024)
# Rows of a classifier's output (10 classes): the row activations' narrow rows.
NARROW_SHAPE = (4096, 10)
TOLERANCE = {
    "float32": Tolerance(rtol=2e-5, atol=1e-6),
    "float64": Tolerance(rtol=1e-7, atol=1e-12),  # torch's float64 hardsigmoid' is 1/6 in float32
}

# torch's form of each activation (densekit's defaults: leaky_relu 0.01, elu 1).
TORCH_FORMS = {
    "linear": lambda F, z: z.clone(),
    "relu": lambda F, z: F.relu(z),
    "leaky_relu": lambda F, z: F.leaky_relu(z, 0.01),
    "elu": lambda F, z: F.elu(z),
    "sigmoid": lambda F, z: z.sigmoid(),
    "tanh": lambda F, z: z.tanh(),
    "softplus": lambda F, z: F.softplus(z, threshold=1000.0),
    "gelu": lambda F, z: F.gelu(z),
    "gelu_tanh": lambda F, z: F.gelu(z, approximate="tanh"),
    "softmax": lambda F, z: F.softmax(z, dim=-1),
    "silu": lambda F, z: F.silu(z),
    "selu": lambda F, z: F.selu(z),
    "relu6": lambda F, z: F.relu6(z),
    "hard_sigmoid": lambda F, z: F.hardsigmoid(z),
    "softsign": lambda F, z: F.softsign(z),
    "mish": lambda F, z: F.mish(z),
    "log_softmax": lambda F, z: F.log_softmax(z, dim=-1),
    "exponential": lambda F, z: z.exp(),
}


def _arrays(activation: str, dtype: str, shape=SHAPE):
    rng = np.random.default_rng(len(activation))
    z = random_array(rng, shape, dtype) * 3
    dy = random_array(rng, shape, dtype)
    return z, dy


def forward_case(activation: str, dtype: str, threads: int, shape=SHAPE) -> Case:
    z, _ = _arrays(activation, dtype, shape)
    y = np.empty_like(z)
    functional = peers.torch.nn.functional
    z_t = peers.torch.from_numpy(z)
    form = TORCH_FORMS[activation]

    def run_densekit():
        return kernels.activation_forward(z, activation, out=y, num_threads=threads)

    def run_torch():
        return form(functional, z_t)

    return Case(
        family=FAMILY,
        name=f"forward {activation}",
        shape=f"{shape[0]}x{shape[1]}",
        dtype=dtype,
        threads=threads,
        work=2.0 * z.size * z.itemsize,
        unit="GB/s",
        work_formula="2*N*itemsize (read z, write y)",
        tolerance=TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=[Impl("torch", run_torch)],
        pure=True,
    )


def backward_case(activation: str, dtype: str, threads: int) -> Case:
    z, dy = _arrays(activation, dtype)
    info = kernels.ACTIVATION_INFO[activation]
    from_y = info["derivative_from_output"] == "always"
    y = kernels.activation_forward(z, activation)
    dz = np.empty_like(z)
    torch = peers.torch
    z_t = torch.from_numpy(z.copy()).requires_grad_(True)
    y_t = TORCH_FORMS[activation](torch.nn.functional, z_t)
    dy_t = torch.from_numpy(dy)
    given = {"y": y} if from_y else {"z": z}

    def run_densekit():
        return kernels.activation_backward(dy, activation, out=dz, num_threads=threads, **given)

    def run_torch():
        return torch.autograd.grad(y_t, z_t, dy_t, retain_graph=True)[0]

    return Case(
        family=FAMILY,
        name=f"backward {activation}",
        shape=f"{SHAPE[0]}x{SHAPE[1]}",
        dtype=dtype,
        threads=threads,
        work=3.0 * z.size * z.itemsize,
        unit="GB/s",
        work_formula="3*N*itemsize (read dy and y or z, write dz)",
        tolerance=TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=[Impl("torch-autograd", run_torch)],
        notes=[f"densekit: derivative from {'y' if from_y else 'z'}; torch: backward only"],
        pure=True,
    )


# The ReLU layer's forms that no fused activation has (relu_forward / relu_backward), with
# torch's function of each.
RELU_LAYER_FORMS = {
    "max_value=6": ({"max_value": 6.0}, lambda F, z: F.relu6(z)),
    "negative_slope=0.2": ({"negative_slope": 0.2}, lambda F, z: F.leaky_relu(z, 0.2)),
    "threshold=0.5": ({"threshold": 0.5}, lambda F, z: F.threshold(z, 0.5, 0.0)),
}


def relu_layer_case(form: str, backward: bool, dtype: str, threads: int) -> Case:
    parameters, torch_form = RELU_LAYER_FORMS[form]
    z, dy = _arrays(form, dtype)
    out = np.empty_like(z)
    torch = peers.torch
    z_t = torch.from_numpy(z.copy()).requires_grad_(backward)
    y_t = torch_form(torch.nn.functional, z_t)
    dy_t = torch.from_numpy(dy)
    if backward:

        def run_densekit():
            return kernels.relu_backward(dy, z, **parameters, out=out, num_threads=threads)

        def run_torch():
            return torch.autograd.grad(y_t, z_t, dy_t, retain_graph=True)[0]

    else:

        def run_densekit():
            return kernels.relu_forward(z, **parameters, out=out, num_threads=threads)

        def run_torch():
            return torch_form(torch.nn.functional, z_t)

    return Case(
        family=FAMILY,
        name=f"{'backward' if backward else 'forward'} ReLU layer {form}",
        shape=f"{SHAPE[0]}x{SHAPE[1]}",
        dtype=dtype,
        threads=threads,
        work=(3.0 if backward else 2.0) * z.size * z.itemsize,
        unit="GB/s",
        work_formula="3*N*itemsize (read dy and z, write dz)"
        if backward
        else "2*N*itemsize (read z, write y)",
        tolerance=TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=[Impl("torch-autograd" if backward else "torch", run_torch)],
        notes=["densekit: relu_forward / relu_backward (the ReLU layer's kernels)"],
        pure=True,
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    for dtype in settings.dtypes():
        for activation in kernels.ACTIVATIONS:
            if peers.torch is None:
                yield Skip(FAMILY, f"{activation} {dtype}", "torch is not importable")
                continue
            if activation not in TORCH_FORMS:
                yield Skip(FAMILY, f"{activation} {dtype}", "no torch form listed")
                continue
            yield forward_case(activation, dtype, settings.threads)
            yield backward_case(activation, dtype, settings.threads)
            if not kernels.ACTIVATION_INFO[activation]["elementwise"]:
                yield forward_case(activation, dtype, settings.threads, NARROW_SHAPE)
        for form in RELU_LAYER_FORMS:
            if peers.torch is None:
                yield Skip(FAMILY, f"ReLU layer {form} {dtype}", "torch is not importable")
                continue
            yield relu_layer_case(form, False, dtype, settings.threads)
            yield relu_layer_case(form, True, dtype, settings.threads)


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
