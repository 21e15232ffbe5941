"""Activation kernels: values, derivatives, finite differences, torch, threads, rejections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import kernels

from . import reference
from .helpers import FLOATS, THREAD_COUNTS, dims, dtypes, eps, random_array

NAMES = list(kernels.ACTIVATIONS)
FROM_OUTPUT = {"linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax"}
WITH_ALPHA = {"leaky_relu": 0.2, "elu": 0.7}


def alpha_for(name):
    return WITH_ALPHA.get(name)


def test_registry_lists_every_activation():
    assert set(NAMES) == {
        "linear",
        "relu",
        "leaky_relu",
        "elu",
        "sigmoid",
        "tanh",
        "softplus",
        "gelu",
        "gelu_tanh",
        "softmax",
    }


def value_tolerance(dtype):
    return (64 * eps(dtype), 64 * eps(dtype))


@pytest.mark.parametrize("name", NAMES)
@given(rows=dims, cols=dims, dtype=dtypes, scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]))
def test_forward_matches_reference(name, rows, cols, dtype, scale):
    rng = np.random.default_rng(rows * 1000 + cols)
    z = random_array(rng, (rows, cols), dtype, scale)
    y = kernels.activation_forward(z, name, alpha=alpha_for(name))
    assert y.dtype == dtype and y.shape == z.shape
    rtol, atol = value_tolerance(dtype)
    np.testing.assert_allclose(y, reference.activation(z, name, alpha_for(name)), rtol, atol)


@pytest.mark.parametrize("name", NAMES)
@given(shape=st.lists(dims, min_size=1, max_size=3), dtype=dtypes)
def test_backward_matches_reference_from_z_and_from_y(name, shape, dtype):
    rng = np.random.default_rng(len(shape))
    z = random_array(rng, shape, dtype, 2.0)
    dy = random_array(rng, shape, dtype)
    alpha = alpha_for(name)
    expected = reference.activation_grad(dy, z, name, alpha)
    rtol, atol = 256 * eps(dtype), 256 * eps(dtype)
    dz = kernels.activation_backward(dy, name, z=z, alpha=alpha)
    np.testing.assert_allclose(dz, expected, rtol, atol)
    if name in FROM_OUTPUT:
        y = kernels.activation_forward(z, name, alpha=alpha)
        dz_y = kernels.activation_backward(dy, name, y=y, alpha=alpha)
        np.testing.assert_allclose(dz_y, expected, rtol, atol)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(name):
    rng = np.random.default_rng(7)
    # Keep clear of the kinks of relu-like functions, where differences are meaningless.
    z = rng.uniform(0.1, 2.0, (5, 7)) * rng.choice([-1.0, 1.0], (5, 7))
    r = rng.standard_normal((5, 7))
    alpha = alpha_for(name)
    dz = kernels.activation_backward(r, name, z=z, alpha=alpha)
    h = 1e-6
    numeric = np.empty_like(z)
    for index in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[index] += h
        zm[index] -= h
        fp = (kernels.activation_forward(zp, name, alpha=alpha) * r).sum()
        fm = (kernels.activation_forward(zm, name, alpha=alpha) * r).sum()
        numeric[index] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(dz, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_large_magnitudes_stay_finite(name, dtype):
    z = np.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], dtype=dtype)
    y = kernels.activation_forward(z, name)
    dz = kernels.activation_backward(np.ones_like(z), name, z=z)
    if name in ("linear", "relu", "leaky_relu", "softplus", "gelu", "gelu_tanh", "elu"):
        assert np.isfinite(y).all()
    else:
        assert np.isfinite(y).all() and np.abs(y).max() <= 1
    assert np.isfinite(dz).all()
    np.testing.assert_allclose(y, reference.activation(z, name), rtol=64 * eps(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_in_place_and_out(name):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((9, 11))
    expected = kernels.activation_forward(z, name)
    out = np.empty_like(z)
    assert kernels.activation_forward(z, name, out=out) is out
    np.testing.assert_array_equal(out, expected)
    z_copy = z.copy()
    assert kernels.activation_forward(z_copy, name, out=z_copy) is z_copy
    np.testing.assert_array_equal(z_copy, expected)
    dy = rng.standard_normal((9, 11))
    dz = kernels.activation_backward(dy, name, z=z)
    dy_copy = dy.copy()
    assert kernels.activation_backward(dy_copy, name, z=z, out=dy_copy) is dy_copy
    np.testing.assert_array_equal(dy_copy, dz)


def test_zero_d_and_empty_arrays():
    assert kernels.activation_forward(np.full((), -2.0), "relu").shape == ()
    empty = np.empty((0, 5), np.float32)
    assert kernels.activation_forward(empty, "softmax").shape == (0, 5)
    assert kernels.activation_backward(empty, "gelu", z=empty).shape == (0, 5)
    assert kernels.activation_forward(np.empty((4, 0)), "softmax").shape == (4, 0)


def test_default_alphas_follow_torch():
    z = np.array([-2.0, 3.0])
    np.testing.assert_array_equal(kernels.activation_forward(z, "leaky_relu"), [-0.02, 3.0])
    np.testing.assert_allclose(kernels.activation_forward(z, "elu"), [np.expm1(-2.0), 3.0])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_bitwise_identical_for_every_thread_count(name, dtype):
    rng = np.random.default_rng(11)
    z = random_array(rng, (3001, 37), dtype, 3.0)
    dy = random_array(rng, (3001, 37), dtype)
    ys = [kernels.activation_forward(z, name, num_threads=t) for t in THREAD_COUNTS]
    dzs = [kernels.activation_backward(dy, name, z=z, num_threads=t) for t in THREAD_COUNTS]
    for y, dz in zip(ys[1:], dzs[1:]):
        assert np.array_equal(y, ys[0], equal_nan=True)
        assert np.array_equal(dz, dzs[0], equal_nan=True)


TORCH_FORMS = {
    "relu": lambda F, z: F.relu(z),
    "leaky_relu": lambda F, z: F.leaky_relu(z, 0.01),
    "elu": lambda F, z: F.elu(z),
    "sigmoid": lambda F, z: F.sigmoid(z),
    "tanh": lambda F, z: F.tanh(z),
    "softplus": lambda F, z: F.softplus(z, threshold=1000.0),
    "gelu": lambda F, z: F.gelu(z),
    "gelu_tanh": lambda F, z: F.gelu(z, approximate="tanh"),
    "softmax": lambda F, z: F.softmax(z, dim=-1),
}


@pytest.mark.parametrize("name", sorted(TORCH_FORMS))
def test_agrees_with_torch(name):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(5)
    z = rng.standard_normal((17, 23)) * 3
    dy = rng.standard_normal((17, 23))
    zt = torch.from_numpy(z.copy()).requires_grad_(True)
    yt = TORCH_FORMS[name](functional, zt)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(
        kernels.activation_forward(z, name), yt.detach().numpy(), rtol=1e-12, atol=1e-14
    )
    dz = kernels.activation_backward(dy, name, z=z)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-12, atol=1e-14)


def rejection_cases():
    z = np.ones((3, 4))
    z32 = np.ones((3, 4), np.float32)
    return [
        (lambda: kernels.activation_forward([1.0, 2.0], "relu"), TypeError, "z"),
        (lambda: kernels.activation_forward(np.ones(3, np.int64), "relu"), TypeError, "z"),
        (lambda: kernels.activation_forward(np.ones((4, 6))[:, ::2], "relu"), ValueError, "z"),
        (lambda: kernels.activation_forward(z, "swish"), ValueError, "activation"),
        (lambda: kernels.activation_forward(z, 3), TypeError, "activation"),
        (lambda: kernels.activation_forward(z, "relu", alpha=0.1), ValueError, "alpha"),
        (lambda: kernels.activation_forward(z, "elu", alpha="x"), TypeError, "alpha"),
        (lambda: kernels.activation_forward(z, "elu", alpha=float("nan")), ValueError, "alpha"),
        (lambda: kernels.activation_forward(z, "relu", out=z32), TypeError, "out"),
        (lambda: kernels.activation_forward(z, "relu", out=np.ones((4, 3))), ValueError, "out"),
        (lambda: kernels.activation_forward(z, "relu", out=np.ones((3, 4))[:, :]), None, None),
        (lambda: kernels.activation_forward(z, "softmax", out=read_only(z)), ValueError, "out"),
        (lambda: kernels.activation_forward(np.ones(()), "softmax"), ValueError, "z"),
        (lambda: kernels.activation_forward(z, "relu", num_threads=0), ValueError, "num_threads"),
        (lambda: kernels.activation_forward(z, "relu", num_threads=1.5), TypeError, "num_threads"),
        (lambda: kernels.activation_backward(z, "gelu", y=z), ValueError, "z"),
        (lambda: kernels.activation_backward(z, "sigmoid"), ValueError, "y"),
        (lambda: kernels.activation_backward(z, "tanh", y=z32), TypeError, "y"),
        (lambda: kernels.activation_backward(z, "tanh", z=np.ones((3, 5))), ValueError, "z"),
        (lambda: kernels.activation_backward(z, "tanh", y=z, out=z), ValueError, "out"),
        (
            lambda: kernels.activation_backward(z, "linear", out=np.ones((3, 4), ">f8")),
            TypeError,
            "out",
        ),
    ]


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def test_partial_overlap_of_out_is_rejected():
    buffer = np.ones(20)
    with pytest.raises(ValueError, match="out"):
        kernels.activation_forward(buffer[:10], "relu", out=buffer[5:15])


@pytest.mark.parametrize("case", range(len(rejection_cases())))
def test_rejections_name_the_argument(case):
    call, error, argument = rejection_cases()[case]
    if error is None:
        call()
        return
    with pytest.raises(error) as info:
        call()
    assert (
        str(info.value).startswith(argument)
        or f"'{argument}'" in str(info.value)
        or (argument in str(info.value))
    )


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name, slope", [("relu", 0.0), ("leaky_relu", 0.01), ("leaky_relu", 0.3)])
def test_relu_backward_from_y_special_values(name, slope, dtype):
    """dz = dy * (y > 0 ? 1 : slope) exactly, the comparison made on y's bits: +-0, the
    smallest subnormal, +-inf and NaN (which takes the slope) at every position of a vector."""
    tiny = np.finfo(dtype).smallest_subnormal
    specials = np.array([0.0, -0.0, tiny, -tiny, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan])
    y = np.resize(specials, 37).astype(dtype)
    dy = np.linspace(-3, 3, y.size).astype(dtype)
    alpha = {} if name == "relu" else {"alpha": slope}
    dz = kernels.activation_backward(dy, name, y=y, **alpha)
    factor = np.where(y > 0, dtype(1), dtype(slope)).astype(dtype)
    assert dz.tobytes() == (dy * factor).tobytes()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("slope", [0.01, 0.3, -0.5])
def test_leaky_relu_forward_special_values(slope, dtype):
    """leaky_relu(z) = z > 0 ? z : alpha z bit for bit (NaN stays NaN, -0 gives alpha -0)."""
    tiny = np.finfo(dtype).smallest_subnormal
    specials = np.array([0.0, -0.0, tiny, -tiny, 1.5, -1.5, np.inf, -np.inf, np.nan, 3e38])
    z = np.resize(specials, 41).astype(dtype)
    y = kernels.activation_forward(z, "leaky_relu", alpha=slope)
    expected = np.where(z > 0, z, dtype(slope) * z).astype(dtype)
    assert y.tobytes() == expected.tobytes()
