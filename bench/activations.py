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


def _case(name, shape, dtype, threads, z, backward, run_densekit, run_torch, notes=()) -> Case:
    """An elementwise case over z: forward reads z and writes y, backward reads dy and y or
    z and writes dz; the peer is torch's function, or its autograd backward."""
    return Case(
        family=FAMILY,
        name=name,
        shape=f"{shape[0]}x{shape[1]}",
        dtype=dtype,
        threads=threads,
        work=(3.0 if backward else 2.0) * z.size * z.itemsize,
        unit="GB/s",
        work_formula="3*N*itemsize (read dy and y or z, write dz)"
        if backward
        else "2*N*itemsize (read z, write y)",
        tolerance=TOLERANCE[dtype],
        densekit=Impl("densekit", run_densekit),
        peers=[Impl("torch-autograd" if backward else "torch", run_torch)],
        notes=list(notes),
        pure=True,
    )


def _torch_forward(form, z):
    """torch's form of the function on z, as a call."""
    functional, z_t = peers.torch.nn.functional, peers.torch.from_numpy(z)
    return lambda: form(functional, z_t)


def _torch_backward(form, z, dy):
    """torch's autograd backward of its form of the function at z, given dy, as a call."""
    torch = peers.torch
    z_t = torch.from_numpy(z.copy()).requires_grad_(True)
    y_t = form(torch.nn.functional, z_t)
    dy_t = torch.from_numpy(dy)
    return lambda: torch.autograd.grad(y_t, z_t, dy_t, retain_graph=True)[0]


def forward_case(activation: str, dtype: str, threads: int, shape=SHAPE) -> Case:
    z, _ = _arrays(activation, dtype, shape)
    y = np.empty_like(z)

    def run_densekit():
        return kernels.activation_forward(z, activation, out=y, num_threads=threads)

    run_torch = _torch_forward(TORCH_FORMS[activation], z)
    return _case(f"forward {activation}", shape, dtype, threads, z, False, run_densekit, run_torch)


def backward_case(activation: str, dtype: str, threads: int) -> Case:
    z, dy = _arrays(activation, dtype)
    from_y = kernels.ACTIVATION_INFO[activation]["derivative_from_output"] == "always"
    given = {"y": kernels.activation_forward(z, activation)} if from_y else {"z": z}
    dz = np.empty_like(z)

    def run_densekit():
        return kernels.activation_backward(dy, activation, out=dz, num_threads=threads, **given)

    run_torch = _torch_backward(TORCH_FORMS[activation], z, dy)
    notes = [f"densekit: derivative from {'y' if from_y else 'z'}; torch: backward only"]
    name = f"backward {activation}"
    return _case(name, SHAPE, dtype, threads, z, True, run_densekit, run_torch, notes)


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
    if backward:

        def run_densekit():
            return kernels.relu_backward(dy, z, **parameters, out=out, num_threads=threads)

        run_torch = _torch_backward(torch_form, z, dy)
    else:

        def run_densekit():
            return kernels.relu_forward(z, **parameters, out=out, num_threads=threads)

        run_torch = _torch_forward(torch_form, z)
    name = f"{'backward' if backward else 'forward'} ReLU layer {form}"
    notes = ["densekit: relu_forward / relu_backward (the ReLU layer's kernels)"]
    return _case(name, SHAPE, dtype, threads, z, backward, run_densekit, run_torch, notes)


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
