"""Activation kernels: values, derivatives, finite differences, torch, threads, rejections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import activations, kernels

from . import reference
from .helpers import FLOATS, THREAD_COUNTS, dims, dtypes, eps, random_array

NAMES = list(kernels.ACTIVATIONS)
FROM_OUTPUT = {
    "linear",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softmax",
    "relu6",
    "hard_sigmoid",
    "log_softmax",
    "exponential",
}
ROW_WISE = {"softmax", "log_softmax"}
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
        "silu",
        "selu",
        "relu6",
        "hard_sigmoid",
        "softsign",
        "mish",
        "log_softmax",
        "exponential",
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
    with np.errstate(over="ignore"):  # exponential overflows float32 where float64 does not
        expected = reference.activation(z, name, alpha_for(name)).astype(dtype)
    np.testing.assert_allclose(y, expected, rtol, atol)


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
    unbounded = {"linear", "relu", "leaky_relu", "softplus", "gelu", "gelu_tanh", "elu"}
    unbounded |= {"silu", "selu", "mish", "log_softmax", "relu6"}
    if name == "exponential":  # exp(1e4) is inf in both dtypes, as in NumPy and torch
        assert np.array_equal(np.isinf(y), z > 1e3) and np.array_equal(np.isinf(dz), z > 1e3)
    elif name in unbounded:
        assert np.isfinite(y).all() and np.isfinite(dz).all()
    else:
        assert np.isfinite(y).all() and np.abs(y).max() <= 1 and np.isfinite(dz).all()
    with np.errstate(over="ignore"):
        expected = reference.activation(z, name).astype(dtype)
    np.testing.assert_allclose(y, expected, rtol=64 * eps(dtype))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(9, 11), (18, 45)])  # narrow rows by blocks, long rows
def test_in_place_and_out(name, dtype, shape):
    rng = np.random.default_rng(3)
    z = rng.standard_normal(shape).astype(dtype)
    expected = kernels.activation_forward(z, name)
    out = np.empty_like(z)
    assert kernels.activation_forward(z, name, out=out) is out
    np.testing.assert_array_equal(out, expected)
    z_copy = z.copy()
    assert kernels.activation_forward(z_copy, name, out=z_copy) is z_copy
    np.testing.assert_array_equal(z_copy, expected)
    dy = rng.standard_normal(shape).astype(dtype)
    dz = kernels.activation_backward(dy, name, z=z)
    dy_copy = dy.copy()
    assert kernels.activation_backward(dy_copy, name, z=z, out=dy_copy) is dy_copy
    np.testing.assert_array_equal(dy_copy, dz)
    if name in FROM_OUTPUT:  # from y: softmax's and log_softmax's vector rows among them
        dz = kernels.activation_backward(dy, name, y=expected)
        dy_copy = dy.copy()
        assert kernels.activation_backward(dy_copy, name, y=expected, out=dy_copy) is dy_copy
        np.testing.assert_array_equal(dy_copy, dz)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_backward_from_z_is_the_same_as_from_y(dtype):
    """softmax's backward from z runs from softmax(z), the forward's bits: the same bits as
    from the stored output, at row lengths around every vector width, on 1-3 threads."""
    rng = np.random.default_rng(14)
    for cols in (1, 10, 16, 17, 64, 100, 1000):
        z = random_array(rng, (301, cols), dtype, 4.0)
        dy = random_array(rng, (301, cols), dtype)
        y = kernels.activation_forward(z, "softmax")
        for threads in THREAD_COUNTS:
            from_z = kernels.activation_backward(dy, "softmax", z=z, num_threads=threads)
            from_y = kernels.activation_backward(dy, "softmax", y=y, num_threads=threads)
            np.testing.assert_array_equal(from_z, from_y)


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
    if name in FROM_OUTPUT:
        from_y = [
            kernels.activation_backward(dy, name, y=ys[0], num_threads=t) for t in THREAD_COUNTS
        ]
        assert all(np.array_equal(dz, from_y[0], equal_nan=True) for dz in from_y[1:])


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
    "silu": lambda F, z: F.silu(z),
    "selu": lambda F, z: F.selu(z),
    "relu6": lambda F, z: F.relu6(z),
    "hard_sigmoid": lambda F, z: F.hardsigmoid(z),
    "softsign": lambda F, z: F.softsign(z),
    "mish": lambda F, z: F.mish(z),
    "log_softmax": lambda F, z: F.log_softmax(z, dim=-1),
    "exponential": lambda F, z: z.exp(),
}
# torch's float64 hardsigmoid backward multiplies by 1/6 rounded to float32.
TORCH_GRAD_RTOL = {"hard_sigmoid": 1e-7}


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
    rtol = TORCH_GRAD_RTOL.get(name, 1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=rtol, atol=1e-14)


def rejection_cases():
    z = np.ones((3, 4))
    z32 = np.ones((3, 4), np.float32)
    return [
        (lambda: kernels.activation_forward([1.0, 2.0], "relu"), TypeError, "z"),
        (lambda: kernels.activation_forward(np.ones(3, np.int64), "relu"), TypeError, "z"),
        (lambda: kernels.activation_forward(np.ones((4, 6))[:, ::2], "relu"), ValueError, "z"),
        (lambda: kernels.activation_forward(z, "swoosh"), ValueError, "activation"),
        (lambda: kernels.activation_forward(z, "silu", alpha=0.1), ValueError, "alpha"),
        (lambda: kernels.activation_forward(np.ones(()), "log_softmax"), ValueError, "z"),
        (lambda: kernels.activation_backward(np.ones(()), "log_softmax", y=z), ValueError, "dy"),
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


# ---- Keras's further activations: accuracy against long-double references -----------------

KERAS_EXTRA = ["silu", "selu", "relu6", "hard_sigmoid", "softsign", "mish", "exponential"]
# Largest error in units of the last place of the correctly rounded result (relu6 is exact;
# hard_sigmoid is relu6(z + 3) / 6 rounded as written, checked bit for bit below).
ULP_BOUND = {"silu": 3, "selu": 4, "relu6": 0, "softsign": 2, "mish": 5, "exponential": 3}
LD = np.longdouble
SELU_SCALE = LD("1.0507009873554804934193349852946")
SELU_ALPHA = LD("1.6732632423543772848170429916717")


def long_sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def long_reference(name, z):
    """f(z) and f'(z) in long double (x87: 11 more bits than float64)."""
    z = z.astype(LD)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "silu":
            s = long_sigmoid(z)
            return z * s, s * (1 + z * long_sigmoid(-z))
        if name == "selu":
            y = np.where(
                z > 0, SELU_SCALE * z, SELU_SCALE * SELU_ALPHA * np.expm1(np.minimum(z, 0))
            )
            d = np.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0)))
            return y, d
        if name == "relu6":
            return np.minimum(np.maximum(z, 0), 6), ((z > 0) & (z < 6)).astype(LD)
        if name == "softsign":
            return z / (1 + np.abs(z)), 1 / (1 + np.abs(z)) ** 2
        if name == "mish":
            t = np.tanh(np.logaddexp(LD(0), z))
            return z * t, t + z * long_sigmoid(z) * (1 - t * t)
        if name == "exponential":
            return np.exp(z), np.exp(z)
    raise AssertionError(name)


def wide_inputs(dtype, seed):
    """Normal draws of every scale, a fine grid over the whole range where exp is finite and
    beyond, the kinks of relu6 and hard_sigmoid, and special values."""
    rng = np.random.default_rng(seed)
    top = 100.0 if dtype == np.float32 else 760.0
    parts = [rng.standard_normal(5000) * s for s in (1e-3, 0.3, 1.0, 3.0, 10.0, 40.0)]
    parts += [
        np.linspace(-top, top, 40001),
        np.linspace(-3.1, 3.1, 2001),
        np.linspace(5.9, 6.1, 201),
    ]
    parts.append(np.array([0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0, 6.0, 1e30, -1e30]))
    return np.concatenate(parts).astype(dtype)


@pytest.mark.parametrize("name", sorted(ULP_BOUND))
@pytest.mark.parametrize("dtype", FLOATS)
def test_keras_activations_within_their_ulp_bound(name, dtype):
    """activation_forward (the ISA in use: run the suite under DENSEKIT_ISA for the others)
    within ULP_BOUND of the correctly rounded value. Below the normal range results have no
    relative precision: there the error may reach tiny (plus |z| subnormal roundings, where a
    subnormal exp(z) is scaled by z); silu and mish may be 0 where exp(z) is below the normal
    range (|result| < 1e-36, float64 1e-305), as the vector exp flushes it."""
    z = wide_inputs(dtype, 1)
    y = kernels.activation_forward(z, name)
    want, _ = long_reference(name, z)
    finfo = np.finfo(dtype)
    with np.errstate(over="ignore"):
        rounded = want.astype(dtype)
    same = (y == rounded) | (np.isnan(y) & np.isnan(rounded))
    ulp = np.spacing(np.abs(rounded)).astype(LD)
    floor = LD(finfo.tiny) + 4 * np.abs(z.astype(LD)) * LD(finfo.smallest_subnormal)
    with np.errstate(invalid="ignore"):
        ok = same | (np.abs(y.astype(LD) - want) <= ULP_BOUND[name] * ulp + floor)
    if name in ("silu", "mish"):
        ok |= (y == 0) & (z < np.log(finfo.tiny))
    assert ok.all(), (z[~ok][:4], y[~ok][:4], want[~ok][:4])


@pytest.mark.parametrize("dtype", FLOATS)
def test_hard_sigmoid_is_relu6_of_z_plus_3_over_6_bit_for_bit(dtype):
    """Keras 3's (and torch's) formula, rounded as written: min(max(z + 3, 0), 6) / 6; NaN
    stays NaN; its derivative is 1/6 strictly inside (-3, 3), from z or from y."""
    z = np.concatenate([wide_inputs(dtype, 2), [np.nan, np.inf, -np.inf]]).astype(dtype)
    y = kernels.activation_forward(z, "hard_sigmoid")
    with np.errstate(invalid="ignore"):
        want = (np.minimum(np.maximum(z + dtype(3), dtype(0)), dtype(6)) / dtype(6)).astype(dtype)
    assert y.tobytes() == want.tobytes()
    dy = np.linspace(-2, 2, z.size).astype(dtype)
    slope = np.where((z > -3) & (z < 3), dtype(1) / dtype(6), dtype(0)).astype(dtype)
    assert kernels.activation_backward(dy, "hard_sigmoid", z=z).tobytes() == (dy * slope).tobytes()
    from_y = kernels.activation_backward(dy[:-3], "hard_sigmoid", y=y[:-3])
    assert from_y.tobytes() == (dy * slope)[:-3].tobytes()


@pytest.mark.parametrize("name", sorted(ULP_BOUND))
@pytest.mark.parametrize("dtype", FLOATS)
def test_keras_activation_derivatives_within_a_few_roundings(name, dtype):
    """dz = dy f'(z) from z (and from y where the table says so) within 8 roundings of the
    size of f''s terms (silu's s + |z s (1 - s)|, mish's |t| + |z s (1 - t^2)|), or 2 ulp for
    exponential from y (dy y)."""
    z = wide_inputs(dtype, 3)
    rng = np.random.default_rng(4)
    dy = (rng.uniform(0.5, 2.0, z.size) * rng.choice([-1, 1], z.size)).astype(dtype)
    _, d = long_reference(name, z)
    zl = z.astype(LD)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "silu":
            s = long_sigmoid(zl)
            size = s + np.abs(zl * s * long_sigmoid(-zl))
        elif name == "mish":
            t = np.tanh(np.logaddexp(LD(0), zl))
            size = np.abs(t) + np.abs(zl * long_sigmoid(zl) * (1 - t * t))
        else:
            size = np.abs(d)
        want = dy.astype(LD) * d
    finfo = np.finfo(dtype)
    # Below the normal range: where exp(z) is flushed, the derivative may be 0 (silu and
    # mish scale it by z).
    floor = LD(finfo.tiny) * np.abs(dy.astype(LD)) * (1 + np.abs(zl))
    bound = 8 * LD(finfo.eps) * np.abs(dy.astype(LD)) * size + floor
    dz = kernels.activation_backward(dy, name, z=z)
    results = [dz]
    if name in FROM_OUTPUT:
        results.append(kernels.activation_backward(dy, name, y=kernels.activation_forward(z, name)))
    for got in results:
        with np.errstate(invalid="ignore"):
            # exp(z) (or dy exp(z)) beyond the largest finite number
            beyond = np.maximum(np.abs(want), np.abs(d)) > finfo.max * (1 - finfo.eps)
            overflow = np.isinf(got) & beyond
            same = (got.astype(LD) == want) | overflow
            ok = same | (np.abs(got.astype(LD) - want) <= bound)
        assert ok.all(), (name, z[~ok][:4], got[~ok][:4], want[~ok][:4])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cols", [1, 2, 7, 16, 17, 33, 1000])
def test_log_softmax_rows(dtype, cols):
    """Each row's (z - max) - log(sum exp(z - max)) within a few roundings of its terms'
    size; -inf entries stay -inf (the others as without them), a row with NaN or +inf is NaN;
    the derivative from y and from z within a few roundings of dy - softmax(z) sum(dy)."""
    rng = np.random.default_rng(cols)
    z = (rng.standard_normal((9, cols)) * rng.choice([0.1, 3, 30, 100], (9, 1))).astype(dtype)
    if cols > 2:
        z[1, 1] = -np.inf
        z[2, cols // 2] = np.nan
        z[3, -1] = np.inf
    y = kernels.activation_forward(z, "log_softmax")
    zl = z.astype(LD)
    with np.errstate(invalid="ignore"):
        shifted = zl - zl.max(axis=1, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        want = shifted - log_sum
    bad_rows = np.isnan(z).any(axis=1) | (z == np.inf).any(axis=1)
    assert np.isnan(y[bad_rows]).all()
    good = ~bad_rows
    finite = good[:, None] & np.isfinite(z)
    assert np.all(y[good[:, None] & (z == -np.inf)] == -np.inf)
    eps_ = LD(np.finfo(dtype).eps)
    # log(sum) inherits the sum's rounding (sum >= 1) as an absolute error: the + 1
    size = np.abs(shifted) + np.abs(log_sum) + 1
    with np.errstate(invalid="ignore"):
        error = np.abs(y.astype(LD) - want)
    # + the row sum's roundings: the portable form adds float64 terms one after another
    assert np.all(error[finite] <= (4 * eps_ * size + eps_ * np.sqrt(LD(cols)) * 4)[finite])
    dy = rng.standard_normal(z.shape).astype(dtype)
    zf = np.where(np.isfinite(z), z, 0).astype(dtype)
    p = np.exp(zf.astype(LD) - zf.astype(LD).max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    total = dy.astype(LD).sum(axis=1, keepdims=True)
    want_dz = dy.astype(LD) - p * total
    size_dz = np.abs(dy.astype(LD)) + p * np.abs(dy.astype(LD)).sum(axis=1, keepdims=True)
    yf = kernels.activation_forward(zf, "log_softmax")
    for dz in (
        kernels.activation_backward(dy, "log_softmax", z=zf),
        kernels.activation_backward(dy, "log_softmax", y=yf),
    ):
        # from y, exp(y) carries y's error (a few roundings of |z - max| + log(sum)) into
        # the p sum(dy) term: p |z - max| <= 1/e, p log(sum) <= log(cols)
        bound = 16 * eps_ * size_dz + 8 * eps_ * np.abs(total) * (1 + np.log(LD(cols)))
        assert np.all(np.abs(dz.astype(LD) - want_dz) <= bound)


@pytest.mark.parametrize("name", [*KERAS_EXTRA, "swish", "log_softmax"])
def test_keras_itself_agrees(name):
    """The Keras 3 functions of the same names (torch backend) give the same values."""
    pytest.importorskip("torch")
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras runs another backend")
    import torch

    rng = np.random.default_rng(9)
    z = rng.standard_normal((11, 13)) * 3
    got = kernels.activation_forward(z, activations.get(name).name)
    want = keras.activations.get(name)(torch.from_numpy(z.copy())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# -- relu_forward / relu_backward: Keras's relu with max_value, negative_slope, threshold --
RELU_PARAMETERS = [
    {"max_value": 1.5},
    {"max_value": 6.0, "negative_slope": 0.1},
    {"threshold": 0.5},
    {"threshold": 2.0, "negative_slope": 0.3},
    {"max_value": 2.0, "negative_slope": 1.7, "threshold": 0.5},
    {"max_value": 0.0},
    {"max_value": 1.0, "threshold": 3.0},  # a cap below the threshold
    {"negative_slope": 0.2},
    {},
]


def in_dtype(parameters, dtype):
    """The parameters rounded to ``dtype``, as the kernels compute with them."""
    return {key: float(dtype(value)) for key, value in parameters.items()}


@pytest.mark.parametrize("parameters", RELU_PARAMETERS)
@given(shape=st.lists(dims, min_size=0, max_size=3), dtype=dtypes)
def test_relu_matches_reference(parameters, shape, dtype):
    rng = np.random.default_rng(len(shape))
    z = np.asarray(random_array(rng, shape, dtype, 3.0))  # 0-d included
    dy = np.asarray(random_array(rng, shape, dtype))
    y = kernels.relu_forward(z, **parameters)
    dz = kernels.relu_backward(dy, z, **parameters)
    assert y.dtype == dz.dtype == dtype and y.shape == dz.shape == z.shape
    rounded = in_dtype(parameters, dtype)
    rtol = 3 * eps(dtype)
    np.testing.assert_allclose(y, reference.relu(z, **rounded), rtol, atol=0)
    np.testing.assert_array_equal(dz, (reference.relu_grad(dy, z, **rounded)).astype(dtype))


@pytest.mark.parametrize("parameters", RELU_PARAMETERS)
def test_relu_backward_matches_finite_differences(parameters):
    rng = np.random.default_rng(5)
    z = rng.uniform(-4.0, 4.0, (6, 7))
    # keep clear of the kinks (0, the threshold, the cap), where differences mean nothing
    kinks = [0.0, parameters.get("threshold", 0.0), parameters.get("max_value", 0.0)]
    for kink in kinks:
        z = np.where(np.abs(z - kink) < 0.05, kink + 0.1, z)
    r = rng.standard_normal(z.shape)
    dz = kernels.relu_backward(r, z, **parameters)
    h = 1e-6
    numeric = np.empty_like(z)
    for index in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[index] += h
        zm[index] -= h
        fp = (kernels.relu_forward(zp, **parameters) * r).sum()
        fm = (kernels.relu_forward(zm, **parameters) * r).sum()
        numeric[index] = (fp - fm) / (2 * h)
    np.testing.assert_allclose(dz, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", FLOATS)
def test_relu_special_values(dtype):
    z = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, 0.5, 1.0, 2.0], dtype)
    y = kernels.relu_forward(z, max_value=1.0, negative_slope=0.5, threshold=0.5)
    np.testing.assert_array_equal(y, np.array([np.nan, -np.inf, 1, -0.25, -0.25, 0, 1, 1], dtype))
    # a zero slope gives 0 below the threshold, -inf included
    y = kernels.relu_forward(z, threshold=0.5)
    np.testing.assert_array_equal(y, np.array([np.nan, 0, np.inf, 0, 0, 0, 1, 2], dtype))
    dz = kernels.relu_backward(np.ones_like(z), z, max_value=1.0, negative_slope=0.5, threshold=0.5)
    np.testing.assert_array_equal(dz, np.array([0, 0.5, 0, 0.5, 0.5, 0, 1, 0], dtype))


@pytest.mark.parametrize("parameters", RELU_PARAMETERS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_relu_backward_compares_on_every_kind_of_value(parameters, dtype):
    """relu_backward's derivative at NaN of either sign, +-0, +-inf, subnormals, the
    threshold and the cap themselves and their neighbours, over a length that is no multiple
    of any vector width: the float64 reference's comparisons, bit for bit."""
    tiny = np.finfo(dtype).smallest_subnormal
    points = [float(dtype(v)) for k, v in parameters.items() if k != "negative_slope"]
    values = [np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, tiny, -tiny, 1.0, -1.0, 1e30]
    for p in [*points, 0.0]:
        values += [p, np.nextafter(dtype(p), dtype(np.inf)), np.nextafter(dtype(p), dtype(-np.inf))]
    z = np.array(values * 7, dtype)[:-3]
    dy = np.random.default_rng(6).standard_normal(z.shape).astype(dtype)
    dz = kernels.relu_backward(dy, z, **parameters)
    want = reference.relu_grad(dy, z, **in_dtype(parameters, dtype)).astype(dtype)
    np.testing.assert_array_equal(dz.view(f"u{z.itemsize}"), want.view(f"u{z.itemsize}"))


@pytest.mark.parametrize("dtype", FLOATS)
def test_relu_bitwise_for_every_thread_count_in_place_and_out(dtype):
    rng = np.random.default_rng(4)
    z = random_array(rng, (3001, 37), dtype, 3.0)
    dy = random_array(rng, (3001, 37), dtype)
    options = {"max_value": 2.5, "negative_slope": 0.2, "threshold": 0.3}
    ys = [kernels.relu_forward(z, **options, num_threads=t) for t in THREAD_COUNTS]
    dzs = [kernels.relu_backward(dy, z, **options, num_threads=t) for t in THREAD_COUNTS]
    assert all(np.array_equal(y, ys[0]) for y in ys) and all(
        np.array_equal(dz, dzs[0]) for dz in dzs
    )
    same = z.copy()
    assert kernels.relu_forward(same, **options, out=same) is same
    assert np.array_equal(same, ys[0])
    same = dy.copy()
    assert kernels.relu_backward(same, z, **options, out=same) is same
    assert np.array_equal(same, dzs[0])


@pytest.mark.parametrize(
    ("call", "error", "argument"),
    [
        (lambda z: kernels.relu_forward(z, max_value=-1.0), ValueError, "max_value"),
        (lambda z: kernels.relu_forward(z, negative_slope=-0.1), ValueError, "negative_slope"),
        (lambda z: kernels.relu_forward(z, threshold=float("nan")), ValueError, "threshold"),
        (lambda z: kernels.relu_forward(z, threshold="1"), TypeError, "threshold"),
        (lambda z: kernels.relu_forward(z.tolist()), TypeError, "z"),
        (lambda z: kernels.relu_forward(z, out=np.empty(4, np.float32)), TypeError, "out"),
        (lambda z: kernels.relu_forward(z, out=np.empty(5)), ValueError, "out"),
        (lambda z: kernels.relu_backward(z, z[:3]), ValueError, "z"),
        (lambda z: kernels.relu_backward(z, z.astype(np.float32)), TypeError, "z"),
        (lambda z: kernels.relu_backward(z.copy(), z, out=z), ValueError, "out"),
    ],
)
def test_relu_rejections_name_the_argument(call, error, argument):
    with pytest.raises(error, match=argument):
        call(np.linspace(-2.0, 2.0, 4))
