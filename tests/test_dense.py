"""Dense forward/backward: reference, finite differences, torch, out=, threads, rejections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import kernels

from . import reference
from .helpers import (
    FLOATS,
    THREAD_COUNTS,
    dims,
    dtypes,
    eps,
    product_tolerance,
    random_array,
    scales,
)

NAMES = list(kernels.ACTIVATIONS)
NEEDS_PREACT = {
    name for name, info in kernels.ACTIVATION_INFO.items() if info["needs_preactivation"]
}


def make_layer(rng, n, k, m, dtype, scale=1.0, bias=True):
    x = random_array(rng, (n, k), dtype, scale)
    w = random_array(rng, (k, m), dtype, 1.0 / np.sqrt(max(k, 1)))
    b = random_array(rng, (m,), dtype) if bias else None
    return x, w, b


def activation_slack(name, dtype):
    """Extra relative error an activation adds on top of the product's."""
    return 64 * eps(dtype)


@pytest.mark.parametrize("name", NAMES)
@given(n=dims, k=dims, m=dims, dtype=dtypes, scale=scales, bias=st.booleans())
def test_forward_matches_reference(name, n, k, m, dtype, scale, bias):
    rng = np.random.default_rng(n * 10007 + k * 101 + m)
    x, w, b = make_layer(rng, n, k, m, dtype, scale, bias)
    preact = np.empty((n, m), dtype)
    y = kernels.dense_forward(x, w, b, name, preact_out=preact)
    y64, z64 = reference.dense_forward(x, w, b, name)
    bound = product_tolerance(x, w, b)
    assert np.all(np.abs(preact - z64) <= bound), "preact_out differs from x @ w + b"
    # The activation's own rounding plus the product's error carried through f (|f'| <= 1.2,
    # selu's <= 1.76, exponential's is y itself; softmax rows are bounded by the largest
    # error of the row, log_softmax entries by their own plus twice the row's largest).
    carried = (1.76 if name == "selu" else 1.2) * bound
    if name == "softmax" and bound.size:
        carried = 2.4 * bound.max(axis=-1, keepdims=True)
    if name == "log_softmax" and bound.size:
        carried = 1.2 * bound + 2.4 * bound.max(axis=-1, keepdims=True)
    finite = np.ones(y64.shape, bool)
    if name == "exponential":
        carried = 1.2 * bound * np.abs(y64)
        largest = float(np.finfo(dtype).max)
        finite = np.abs(y64) < largest / 4  # beyond: overflow, checked below
        assert np.all(np.isinf(y[np.abs(y64) > 2 * largest]))
    slack = activation_slack(name, dtype) * np.maximum(np.abs(y64), 1e-30)
    with np.errstate(invalid="ignore"):
        error = np.abs(y - y64)
        ok = error <= carried + slack + 4 * eps(dtype) * np.abs(y64) + 1e-37
    assert np.all(ok[finite])


@pytest.mark.parametrize("name", NAMES)
@given(n=dims, k=dims, m=dims, dtype=dtypes, bias=st.booleans())
def test_backward_matches_reference(name, n, k, m, dtype, bias):
    rng = np.random.default_rng(n * 7919 + k * 31 + m)
    x, w, b = make_layer(rng, n, k, m, dtype, 1.0, bias)
    preact = np.empty((n, m), dtype)
    y = kernels.dense_forward(x, w, b, name, preact_out=preact)
    dy = random_array(rng, (n, m), dtype)
    use_y = name not in NEEDS_PREACT
    dx, dw, db = kernels.dense_backward(
        dy, x, w, y=y if use_y else None, preact=None if use_y else preact, activation=name
    )
    rdx, rdw, rdb = reference.dense_backward(dy, x, w, preact, name)
    dz = np.abs(reference.activation_grad(dy, preact, name))
    # dz itself carries a few ulps of dy (derivatives such as 1 - y*y lose relative accuracy
    # where |y| -> 1); that error then flows through the products. A row activation's dz
    # (dy - s sum(dy) for log_softmax, s (dy - sum(s dy)) for softmax) also carries a few ulps
    # of s times the row's sum, which cancellation can leave far above dz and dy.
    tol = 64 * eps(dtype)
    dz_error = tol * np.abs(dy.astype(np.float64))
    if name in ("softmax", "log_softmax"):
        s = reference.activation(preact, "softmax")
        dz_error += tol * s * np.abs(dy.astype(np.float64)).sum(axis=1, keepdims=True)
    x_abs, w_abs = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    assert np.all(np.abs(db - rdb) <= tol * dz.sum(0) + dz_error.sum(0))
    dw_bound = product_tolerance(x.T, dz, dtype=dtype) + x_abs.T @ dz_error
    assert np.all(np.abs(dw - rdw) <= dw_bound)
    dx_bound = product_tolerance(dz, w.T, dtype=dtype) + dz_error @ w_abs.T
    assert np.all(np.abs(dx - rdx) <= dx_bound)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(name):
    rng = np.random.default_rng(1)
    n, k, m = 4, 5, 3
    x, w, b = make_layer(rng, n, k, m, np.float64, 1.0)
    r = rng.standard_normal((n, m))

    def objective(x_, w_, b_):
        return float((kernels.dense_forward(x_, w_, b_, name) * r).sum())

    preact = np.empty((n, m))
    kernels.dense_forward(x, w, b, name, preact_out=preact)
    assert np.abs(preact).min() > 1e-3, "sample sits on a kink"
    dx, dw, db = kernels.dense_backward(r, x, w, preact=preact, activation=name)
    h = 1e-6
    for analytic, array in ((dx, x), (dw, w), (db, b)):
        numeric = np.empty_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + h
            plus = objective(x, w, b)
            array[index] = saved - h
            minus = objective(x, w, b)
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


TORCH_ACTIVATIONS = {
    "linear": lambda F, z: z,
    "relu": lambda F, z: F.relu(z),
    "leaky_relu": lambda F, z: F.leaky_relu(z, 0.01),
    "elu": lambda F, z: F.elu(z),
    "sigmoid": lambda F, z: torch_sigmoid(z),
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


def torch_sigmoid(z):
    return z.sigmoid()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_agrees_with_torch_autograd(name, dtype):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(2)
    x, w, b = make_layer(rng, 33, 65, 17, dtype)
    dy = random_array(rng, (33, 17), dtype)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    yt = TORCH_ACTIVATIONS[name](functional, functional.linear(xt, wt.T, bt))
    yt.backward(torch.from_numpy(dy))
    preact = np.empty((33, 17), dtype)
    y = kernels.dense_forward(x, w, b, name, preact_out=preact)
    dx, dw, db = kernels.dense_backward(dy, x, w, y=y, preact=preact, activation=name)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    # torch's float64 hardsigmoid backward multiplies by 1/6 rounded to float32
    grad_tol = 1e-6 if name == "hard_sigmoid" else tol * 10
    for ours, theirs in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=grad_tol, atol=grad_tol)


def test_out_arrays_are_filled_and_returned():
    rng = np.random.default_rng(3)
    x, w, b = make_layer(rng, 6, 5, 4, np.float32)
    out = np.empty((6, 4), np.float32)
    assert kernels.dense_forward(x, w, b, "relu", out=out) is out
    dy = random_array(rng, (6, 4), np.float32)
    dx_out = np.empty((6, 5), np.float32)
    dw_out = np.empty((5, 4), np.float32)
    db_out = np.empty(4, np.float32)
    dx, dw, db = kernels.dense_backward(
        dy, x, w, y=out, activation="relu", dx_out=dx_out, dw_out=dw_out, db_out=db_out
    )
    assert dx is dx_out and dw is dw_out and db is db_out


def test_accumulate_adds_into_dw_and_db():
    rng = np.random.default_rng(4)
    x, w, _ = make_layer(rng, 9, 7, 5, np.float64)
    dy = rng.standard_normal((9, 5))
    _, dw1, db1 = kernels.dense_backward(dy, x, w)
    dw = rng.standard_normal((7, 5))
    db = rng.standard_normal(5)
    start_w, start_b = dw.copy(), db.copy()
    kernels.dense_backward(dy, x, w, dw_out=dw, db_out=db, accumulate=True, need_dx=False)
    np.testing.assert_allclose(dw, start_w + dw1, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(db, start_b + db1, rtol=1e-14, atol=1e-14)


def test_need_flags_skip_outputs():
    rng = np.random.default_rng(5)
    x, w, _ = make_layer(rng, 3, 4, 2, np.float32)
    dy = random_array(rng, (3, 2), np.float32)
    dx, dw, db = kernels.dense_backward(dy, x, w, need_dx=False, need_db=False)
    assert dx is None and db is None and dw.shape == (4, 2)


def test_leading_batch_axes_like_torch_linear():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 5))
    w = rng.standard_normal((5, 4))
    b = rng.standard_normal(4)
    y = kernels.dense_forward(x, w, b, "tanh")
    np.testing.assert_allclose(y, np.tanh(x @ w + b), rtol=1e-13)
    dy = rng.standard_normal((2, 3, 4))
    dx, dw, db = kernels.dense_backward(dy, x, w, y=y, activation="tanh")
    dz = dy * (1 - y**2)
    np.testing.assert_allclose(dx, dz @ w.T, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dw, x.reshape(6, 5).T @ dz.reshape(6, 4), rtol=1e-12)
    np.testing.assert_allclose(db, dz.sum((0, 1)), rtol=1e-12)
    x1 = rng.standard_normal(5)
    np.testing.assert_allclose(kernels.dense_forward(x1, w, b), x1 @ w + b, rtol=1e-13)


def test_empty_and_degenerate_shapes():
    b = np.arange(3.0)
    y = kernels.dense_forward(np.empty((4, 0)), np.empty((0, 3)), b, "relu")
    np.testing.assert_array_equal(y, np.tile(b, (4, 1)))
    assert kernels.dense_forward(np.empty((0, 5)), np.ones((5, 3))).shape == (0, 3)
    assert kernels.dense_forward(np.ones((2, 5)), np.ones((5, 0))).shape == (2, 0)
    dx, dw, db = kernels.dense_backward(np.empty((0, 3)), np.empty((0, 5)), np.ones((5, 3)))
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dw, np.zeros((5, 3)))
    np.testing.assert_array_equal(db, np.zeros(3))


def test_huge_dimension_with_empty_batch_does_not_allocate():
    w = np.broadcast_to(np.float32(0), (1 << 40, 3))
    with pytest.raises(ValueError, match="w"):
        kernels.dense_forward(np.empty((0, 1 << 40), np.float32), w)
    with pytest.raises(MemoryError):  # the output alone would need 12 TiB
        kernels.dense_forward(np.empty((3, 0), np.float32), np.empty((0, 1 << 40), np.float32))
    y = kernels.dense_forward(np.empty((0, 7), np.float32), np.ones((7, 1 << 20), np.float32))
    assert y.shape == (0, 1 << 20)


@pytest.mark.parametrize("name", ["linear", "relu", "gelu", "softmax"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_bitwise_identical_for_every_thread_count(name, dtype):
    rng = np.random.default_rng(8)
    x, w, b = make_layer(rng, 301, 389, 203, dtype)
    dy = random_array(rng, (301, 203), dtype)
    results = []
    for threads in THREAD_COUNTS:
        preact = np.empty((301, 203), dtype)
        y = kernels.dense_forward(x, w, b, name, preact_out=preact, num_threads=threads)
        grads = kernels.dense_backward(
            dy, x, w, y=y, preact=preact, activation=name, num_threads=threads
        )
        results.append((y, preact, *grads))
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            assert np.array_equal(got, want)


def test_bitwise_identical_for_skinny_shapes():
    rng = np.random.default_rng(9)
    for n, k, m in [(1, 784, 256), (32, 784, 256), (4097, 3, 2), (2, 5000, 3)]:
        x, w, b = make_layer(rng, n, k, m, np.float32)
        dy = random_array(rng, (n, m), np.float32)
        base = kernels.dense_forward(x, w, b, "relu", num_threads=1)
        base_grads = kernels.dense_backward(dy, x, w, y=base, activation="relu", num_threads=1)
        for threads in THREAD_COUNTS[1:]:
            assert np.array_equal(kernels.dense_forward(x, w, b, "relu", num_threads=threads), base)
            grads = kernels.dense_backward(dy, x, w, y=base, activation="relu", num_threads=threads)
            for got, want in zip(grads, base_grads):
                assert np.array_equal(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_bias_gradient_is_the_row_ordered_double_sum(dtype):
    """db is each column of dz summed over the rows in row order in float64, then rounded:
    bit for bit, for column counts that split among the threads unevenly (1, 17, 203, 1000)
    and any thread count. linear: dz is dy."""
    rng = np.random.default_rng(10)
    for n, m in [(1, 1), (513, 17), (300, 203), (64, 1000), (0, 5)]:
        x, w, _ = make_layer(rng, n, 3, m, dtype)
        dy = random_array(rng, (n, m), dtype)
        # np.cumsum adds in order (np.sum adds pairwise)
        want = (np.cumsum(dy.astype(np.float64), axis=0)[-1] if n else np.zeros(m)).astype(dtype)
        for threads in THREAD_COUNTS:
            db = kernels.dense_backward(dy, x, w, activation="linear", num_threads=threads)[2]
            assert np.array_equal(db, want), (n, m, threads)


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def rejection_cases():
    x = np.ones((4, 3))
    w = np.ones((3, 2))
    b = np.ones(2)
    dy = np.ones((4, 2))
    big = np.ones(100)
    return [
        ("list input", lambda: kernels.dense_forward([[1.0]], w), TypeError, "x"),
        ("int dtype", lambda: kernels.dense_forward(x.astype(int), w), TypeError, "x"),
        ("float16", lambda: kernels.dense_forward(x.astype(np.float16), w), TypeError, "x"),
        ("mixed dtype", lambda: kernels.dense_forward(x, w.astype(np.float32)), TypeError, "w"),
        ("bias dtype", lambda: kernels.dense_forward(x, w, b.astype(np.float32)), TypeError, "b"),
        ("0-d x", lambda: kernels.dense_forward(np.ones(()), w), ValueError, "x"),
        ("w 1-d", lambda: kernels.dense_forward(x, np.ones(3)), ValueError, "w"),
        ("k mismatch", lambda: kernels.dense_forward(x, np.ones((4, 2))), ValueError, "w"),
        ("bias shape", lambda: kernels.dense_forward(x, w, np.ones(3)), ValueError, "b"),
        ("x strided", lambda: kernels.dense_forward(np.ones((4, 6))[:, ::2], w), ValueError, "x"),
        (
            "w fortran",
            lambda: kernels.dense_forward(x, np.asfortranarray(np.ones((3, 2)))),
            ValueError,
            "w",
        ),
        ("activation", lambda: kernels.dense_forward(x, w, b, "swish"), ValueError, "activation"),
        ("alpha", lambda: kernels.dense_forward(x, w, b, "tanh", alpha=0.3), ValueError, "alpha"),
        ("out shape", lambda: kernels.dense_forward(x, w, out=np.empty((4, 3))), ValueError, "out"),
        (
            "out dtype",
            lambda: kernels.dense_forward(x, w, out=np.empty((4, 2), np.float32)),
            TypeError,
            "out",
        ),
        ("out readonly", lambda: kernels.dense_forward(x, w, out=read_only(dy)), ValueError, "out"),
        (
            "out strided",
            lambda: kernels.dense_forward(x, w, out=np.empty((4, 4))[:, ::2]),
            ValueError,
            "out",
        ),
        ("out list", lambda: kernels.dense_forward(x, w, out=[[0.0] * 2] * 4), TypeError, "out"),
        ("out overlaps x", lambda: overlap_forward(big), ValueError, "out"),
        (
            "preact overlaps out",
            lambda: kernels.dense_forward(x, w, out=dy, preact_out=dy),
            ValueError,
            "out",
        ),
        (
            "preact shape",
            lambda: kernels.dense_forward(x, w, preact_out=np.empty(8)),
            ValueError,
            "preact_out",
        ),
        (
            "threads 0",
            lambda: kernels.dense_forward(x, w, num_threads=0),
            ValueError,
            "num_threads",
        ),
        (
            "threads bool",
            lambda: kernels.dense_forward(x, w, num_threads=True),
            TypeError,
            "num_threads",
        ),
        ("dy shape", lambda: kernels.dense_backward(np.ones((4, 3)), x, w), ValueError, "dy"),
        (
            "gelu no preact",
            lambda: kernels.dense_backward(dy, x, w, y=dy, activation="gelu"),
            ValueError,
            "preact",
        ),
        (
            "relu nothing",
            lambda: kernels.dense_backward(dy, x, w, activation="relu"),
            ValueError,
            "y",
        ),
        (
            "preact shape b",
            lambda: kernels.dense_backward(dy, x, w, preact=x, activation="elu"),
            ValueError,
            "preact",
        ),
        (
            "y dtype",
            lambda: kernels.dense_backward(dy, x, w, y=dy.astype(np.float32), activation="relu"),
            TypeError,
            "y",
        ),
        (
            "accumulate no dw",
            lambda: kernels.dense_backward(dy, x, w, accumulate=True),
            ValueError,
            "dw_out",
        ),
        (
            "accumulate no db",
            lambda: kernels.dense_backward(dy, x, w, accumulate=True, dw_out=np.zeros((3, 2))),
            ValueError,
            "db_out",
        ),
        (
            "dx_out unneeded",
            lambda: kernels.dense_backward(dy, x, w, need_dx=False, dx_out=np.empty((4, 3))),
            ValueError,
            "dx_out",
        ),
        (
            "dw_out overlaps w",
            lambda: kernels.dense_backward(dy, x, w, dw_out=w),
            ValueError,
            "dw_out",
        ),
        ("dx_out overlaps dw", lambda: shared_grads(dy, x, w), ValueError, "dx_out"),
        (
            "dw_out readonly",
            lambda: kernels.dense_backward(dy, x, w, dw_out=read_only(w)),
            ValueError,
            "dw_out",
        ),
        (
            "db_out dtype",
            lambda: kernels.dense_backward(dy, x, w, db_out=np.ones(2, np.float32)),
            TypeError,
            "db_out",
        ),
        ("dy non-native", lambda: kernels.dense_backward(dy.astype(">f8"), x, w), TypeError, "dy"),
    ]


def overlap_forward(buffer):
    x = buffer[:12].reshape(4, 3)
    w = np.ones((3, 2))
    return kernels.dense_forward(x, w, out=buffer[10:18].reshape(4, 2))


def shared_grads(dy, x, w):
    storage = np.empty(100)
    return kernels.dense_backward(
        dy, x, w, dx_out=storage[:12].reshape(4, 3), dw_out=storage[6:12].reshape(3, 2)
    )


CASES = rejection_cases()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_rejections_name_the_argument(case):
    _, call, error, argument = rejection_cases()[case]
    with pytest.raises(error) as info:
        call()
    assert str(info.value).startswith(argument + ":") or f"'{argument}'" in str(info.value)


def test_inputs_may_be_read_only():
    rng = np.random.default_rng(10)
    x, w, b = (read_only(a) for a in make_layer(rng, 5, 4, 3, np.float32))
    y = kernels.dense_forward(x, w, b, "relu")
    dy = read_only(random_array(rng, (5, 3), np.float32))
    kernels.dense_backward(dy, x, w, y=read_only(y), activation="relu")


# ---- weights packed once (pack_weights) -------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n, k, m",
    [
        (64, 1024, 1024),  # the packed form is read (a few row tiles, 4 MiB)
        (300, 257, 515),  # read, ragged panels and k blocks
        (32, 700, 300),  # read, a partial last panel
        (1024, 1024, 1024),  # many row tiles: w is packed per call instead
        (3, 100, 100),  # short products read w in place
        (0, 10, 10),
        (7, 0, 5),
    ],
)
def test_packed_weights_give_the_bits_of_w(dtype, n, k, m):
    """dense_forward with pack_weights(w) in place of w: the same bits for every activation,
    bias or not, leading axes and thread counts, whether or not the product reads the packed
    form (a copy made once, to be reused across calls)."""
    rng = np.random.default_rng(n + k + m)
    x = rng.standard_normal((n, k)).astype(dtype)
    w = rng.standard_normal((k, m)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    packed = kernels.pack_weights(w)
    assert packed.shape == (k, m) and packed.dtype == w.dtype
    assert np.array_equal(packed.weights, w) and not packed.weights.flags.writeable
    for activation in ("linear", "relu", "gelu", "softmax"):
        for threads in (1, 2, 3):
            plain = kernels.dense_forward(x, w, b, activation, num_threads=threads)
            again = kernels.dense_forward(x, packed, b, activation, num_threads=threads)
            assert again.tobytes() == plain.tobytes(), (activation, threads)
    z = np.empty((n, m), dtype)
    y = kernels.dense_forward(
        x.reshape(1, n, k), packed, None, "tanh", preact_out=z.reshape(1, n, m)
    )
    assert np.array_equal(y[0], kernels.dense_forward(x, w, None, "tanh"))
    assert np.array_equal(z, kernels.dense_forward(x, w))


def test_packed_weights_are_a_snapshot():
    """Changing w after packing changes nothing the packed weights compute (they hold their own
    copy); packing again picks the change up."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    w = rng.standard_normal((512, 512)).astype(np.float32)
    packed = kernels.pack_weights(w)
    before = kernels.dense_forward(x, packed)
    w *= 2
    assert np.array_equal(kernels.dense_forward(x, packed), before)
    assert np.array_equal(kernels.dense_forward(x, kernels.pack_weights(w)), 2 * before)


def test_packed_weights_reject_bad_input():
    x = np.ones((4, 3), np.float32)
    packed = kernels.pack_weights(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="w"):
        kernels.dense_forward(x.astype(np.float64), packed)  # dtype of x against the packed w
    with pytest.raises(ValueError, match="w"):
        kernels.dense_forward(np.ones((4, 5), np.float32), packed)  # k does not match
    with pytest.raises(ValueError, match="w"):
        kernels.pack_weights(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="w"):
        kernels.pack_weights([[1.0, 2.0]])
    with pytest.raises(TypeError, match="w"):
        kernels.dense_backward(np.ones((4, 2), np.float32), x, packed)  # forward only
    with pytest.raises(ValueError, match="num_threads"):
        kernels.pack_weights(np.ones((3, 2), np.float32), num_threads=0)
