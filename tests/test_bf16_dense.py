"""The bf16 dense layer kernels, dense_forward_bf16 and dense_backward_bf16 (csrc/lowp/).

Each is the float32 dense layer with its products in bf16: the operands rounded to bf16 to
nearest even (ml_dtypes' rounding), products by matmul_bf16's rule. So each result must equal
bit for bit the composition of the already-tested pieces (to_bfloat16 / ml_dtypes, matmul_bf16,
activation_forward / activation_backward, a float64 column sum), and be within bf16's rounding
of the float64 reference of the float layer.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import _core
from densekit import kernels as K

from . import reference as ref
from .helpers import json_of_child

BF16 = ml_dtypes.bfloat16
ELEMENTWISE = [name for name in K.ACTIVATIONS if K.ACTIVATION_INFO[name]["elementwise"]]
NEEDS_Z = {name for name in K.ACTIVATIONS if K.ACTIVATION_INFO[name]["needs_preactivation"]}


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def layer(rng, n, k, m):
    x = rng.standard_normal((n, k)).astype(np.float32)
    w = (rng.standard_normal((k, m)) / np.sqrt(max(k, 1))).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) * 0.1
    return x, w, b


def composed_forward(x, w, b, activation):
    """The same layer from the tested pieces: matmul_bf16 of the rounded operands."""
    z = K.matmul_bf16(x.astype(BF16), w.astype(BF16), bias=b)
    return z, K.activation_forward(z, activation)


def composed_backward(dy, x, w, z, activation):
    dz = K.activation_backward(dy, activation, z=z) if activation != "linear" else dy
    dz16 = dz.astype(BF16)
    dw = K.matmul_bf16(x.astype(BF16), dz16, trans_a=True)
    dx = K.matmul_bf16(dz16, w.astype(BF16), trans_b=True)
    db = dz.astype(np.float64).sum(axis=0).astype(np.float32)
    return dx, dw, db


@pytest.mark.parametrize("activation", [*ELEMENTWISE, "softmax", "log_softmax"])
def test_forward_is_the_composition_bit_for_bit(activation):
    rng = np.random.default_rng(1)
    x, w, b = layer(rng, 23, 67, 45)
    packed = K.Bf16Weights(w)
    preact = np.empty((23, 45), np.float32)
    y = K.dense_forward_bf16(x, packed, b, activation=activation, preact_out=preact)
    z, want = composed_forward(x, w, b, activation)
    np.testing.assert_array_equal(bits(preact), bits(z))
    np.testing.assert_array_equal(bits(y), bits(want))


@pytest.mark.parametrize("activation", ["linear", "relu", "gelu", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize(
    ("n", "m", "threads"),
    # an odd m (dx's A rounded as it is packed), an even one (dz in bf16 rows, read in place),
    # an odd n (the last row pair of dz's panels), many row pairs on several threads, and
    # batches over 1024 rows (dw's x^T of many row pairs per row tile)
    [(31, 37, 1), (31, 38, 2), (97, 64, 3), (256, 130, 2), (1031, 37, 1), (1056, 38, 3)],
)
def test_backward_is_the_composition_bit_for_bit(activation, n, m, threads):
    rng = np.random.default_rng(2)
    x, w, b = layer(rng, n, 53, m)
    packed = K.Bf16Weights(w, transposed=True)
    preact = np.empty((n, m), np.float32)
    y = K.dense_forward_bf16(x, packed, b, activation=activation, preact_out=preact)
    dy = rng.standard_normal((n, m)).astype(np.float32)
    dx, dw, db = K.dense_backward_bf16(
        dy, x, packed, preact=preact, y=y, activation=activation, num_threads=threads
    )
    want = composed_backward(dy, x, w, preact, activation)
    for got, expected in zip((dx, dw, db), want):
        np.testing.assert_array_equal(bits(got), bits(expected))


def awkward_floats(rng, shape):
    """float32 values whose rounding to bf16 is easy to get wrong: exact ties (even and odd
    upper halves), just below and above them, carries into the exponent, subnormals."""
    upper = rng.integers(0x3C00, 0x4100, shape, dtype=np.uint32)  # |v| in [2^-7, 8)
    upper |= rng.integers(0, 2, shape, dtype=np.uint32) << 15  # either sign
    upper[rng.random(shape) < 0.1] |= 0x007F  # all-ones mantissa: rounding up carries
    lower = rng.choice(np.array([0x8000, 0x7FFF, 0x8001, 0xFFFF, 0x0000, 0x0001], np.uint32), shape)
    v = (upper << 16 | lower).view(np.float32)
    v[rng.random(shape) < 0.05] = np.float32(1e-40)  # subnormal: its bf16 is read as zero
    return v


@pytest.mark.parametrize("n", [19, 1031])
@pytest.mark.parametrize("special", [None, np.nan, np.inf, -np.nan])
def test_float32_operands_round_as_to_bfloat16_does(special, n):
    # Every float32 operand (x, the weights for w and w.T, x^T and dz in the backward pass) is
    # rounded while it is packed: ties, carries and tails of every vector width must give the
    # bits of the separately rounded operands, and a NaN or inf stays one.
    rng = np.random.default_rng(12)
    k, m = 47, 45
    x, w, dy = awkward_floats(rng, (n, k)), awkward_floats(rng, (k, m)), awkward_floats(rng, (n, m))
    if special is not None:
        x[3, 5] = w[7, 40] = dy[11, 2] = special
    b = np.zeros(m, np.float32)
    packed = K.Bf16Weights(w, transposed=True)
    with np.errstate(invalid="ignore", over="ignore"):
        y = K.dense_forward_bf16(x, packed, b)
        dx, dw, _ = K.dense_backward_bf16(dy, x, packed)
        want_y = K.matmul_bf16(x.astype(BF16), w.astype(BF16), bias=b)
        *want_grads, _ = composed_backward(dy, x, w, want_y, "linear")
    for got, want in zip((y, dx, dw), (want_y, *want_grads)):
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        np.testing.assert_array_equal(bits(got)[~nan], bits(want)[~nan])
    if special is None:
        assert np.isfinite(y).all()


@pytest.mark.parametrize("activation", ["linear", "relu", "gelu", "sigmoid", "tanh"])
def test_gradients_are_near_the_float64_reference(activation):
    """bf16 rounds each operand to 8 significant bits: the layer's gradients are those of the
    float layer within a few units of 2^-8 relative to the magnitudes involved."""
    rng = np.random.default_rng(3)
    x, w, b = layer(rng, 64, 96, 48)
    packed = K.Bf16Weights(w, transposed=True)
    preact = np.empty((64, 48), np.float32)
    K.dense_forward_bf16(x, packed, b, activation=activation, preact_out=preact)
    dy = rng.standard_normal((64, 48)).astype(np.float32)
    dx, dw, db = K.dense_backward_bf16(dy, x, packed, preact=preact, activation=activation)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    z64 = x64 @ w64 + b64
    np.testing.assert_array_less(
        np.abs(preact - z64), 4 * 2.0**-8 * (np.abs(x64) @ np.abs(w64)) + 1e-6
    )
    # the derivative at the layer's own pre-activation (a kink, as relu's, follows its sign)
    dz64 = ref.activation_grad(dy.astype(np.float64), preact.astype(np.float64), activation)
    unit = 4 * 2.0**-8
    np.testing.assert_array_less(
        np.abs(dw - x64.T @ dz64), unit * (np.abs(x64.T) @ np.abs(dz64)) + 1e-6
    )
    np.testing.assert_array_less(
        np.abs(dx - dz64 @ w64.T), unit * (np.abs(dz64) @ np.abs(w64.T)) + 1e-6
    )
    np.testing.assert_array_less(np.abs(db - dz64.sum(0)), unit * np.abs(dz64).sum(0) + 1e-6)


def test_accumulate_and_what_is_needed():
    rng = np.random.default_rng(4)
    x, w, _ = layer(rng, 9, 17, 11)
    packed = K.Bf16Weights(w)  # no w.T: dx cannot be asked for
    dy = rng.standard_normal((9, 11)).astype(np.float32)
    dw0 = rng.standard_normal((17, 11)).astype(np.float32)
    db0 = rng.standard_normal(11).astype(np.float32)
    dw, db = dw0.copy(), db0.copy()
    result = K.dense_backward_bf16(
        dy, x, packed, need_dx=False, dw_out=dw, db_out=db, accumulate=True
    )
    assert result[0] is None and result[1] is dw and result[2] is db
    _, fresh_dw, fresh_db = composed_backward(dy, x, w, None, "linear")
    np.testing.assert_allclose(dw, dw0 + fresh_dw, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(db, db0 + fresh_db, rtol=1e-6, atol=1e-6)
    only_db = K.dense_backward_bf16(dy, x, packed, need_dx=False, need_dw=False)
    assert only_db[0] is None and only_db[1] is None
    np.testing.assert_array_equal(only_db[2], fresh_db)


@pytest.mark.parametrize("m", [1, 3, 10, 16])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("activation", ["gelu", "relu", "softmax"])
def test_narrow_layers_are_the_composition_bit_for_bit(m, threads, activation):
    # A layer of a few units over a large batch computes y^T = w^T x^T and dw^T = dz^T x (its
    # columns would be mostly padding): the bits of the direct product, accumulate included.
    rng = np.random.default_rng(m)
    n, k = 256, 131
    x, w, b = layer(rng, n, k, m)
    packed = K.Bf16Weights(w, transposed=True, num_threads=threads)
    preact = np.empty((n, m), np.float32)
    y = K.dense_forward_bf16(
        x, packed, b, activation=activation, preact_out=preact, num_threads=threads
    )
    z, want_y = composed_forward(x, w, b, activation)
    np.testing.assert_array_equal(bits(preact), bits(z))
    np.testing.assert_array_equal(bits(y), bits(want_y))
    dy = rng.standard_normal((n, m)).astype(np.float32)
    dw0 = rng.standard_normal((k, m)).astype(np.float32)
    dw = dw0.copy()
    dx, _, db = K.dense_backward_bf16(
        dy,
        x,
        packed,
        preact=preact,
        activation=activation,
        dw_out=dw,
        accumulate=False,
        num_threads=threads,
    )
    want_dx, want_dw, want_db = composed_backward(dy, x, w, z, activation)
    for got, expected in zip((dx, dw, db), (want_dx, want_dw, want_db)):
        np.testing.assert_array_equal(bits(got), bits(expected))
    dw[...] = dw0
    K.dense_backward_bf16(
        dy,
        x,
        packed,
        preact=preact,
        activation=activation,
        need_dx=False,
        need_db=False,
        dw_out=dw,
        accumulate=True,
        num_threads=threads,
    )
    np.testing.assert_array_equal(bits(dw), bits(dw0 + want_dw))


@pytest.mark.parametrize(("k", "m"), [(0, 5), (5, 0), (0, 0), (1, 1)])
def test_empty_and_single_weights(k, m):
    """Zero-size weights pack (w.T too) and give empty or zero products, as float32 does."""
    rng = np.random.default_rng(8)
    x, w, b = layer(rng, 3, k, m)
    packed = K.Bf16Weights(w, transposed=True)
    z = np.empty((3, m), np.float32)
    y = K.dense_forward_bf16(x, packed, b, activation="relu", preact_out=z)
    np.testing.assert_array_equal(y, composed_forward(x, w, b, "relu")[1])
    dx, dw, db = K.dense_backward_bf16(np.ones_like(y), x, packed, preact=z, activation="relu")
    assert dx.shape == (3, k) and dw.shape == (k, m) and db.shape == (m,)
    for got, want in zip((dx, dw, db), composed_backward(np.ones_like(y), x, w, z, "relu")):
        np.testing.assert_array_equal(got, want)


def test_weights_with_many_rows_and_no_columns_pack_at_once():
    """Zero-size kernels with a huge extent pack at once: the packing loops over neither
    2^39 empty k pairs nor 2^35 empty panels (the fuzzer found both passes)."""
    for shape in ((2**40, 0), (0, 2**40)):
        packed = K.Bf16Weights(np.empty(shape, np.float32), transposed=True)
        assert packed.shape == shape


def test_pack_follows_new_weights_and_keeps_its_shape():
    rng = np.random.default_rng(5)
    x, w, b = layer(rng, 5, 12, 7)
    packed = K.Bf16Weights(w, transposed=True)
    assert packed.shape == (12, 7) and packed.transposed
    w2 = w * 3 + 1
    packed.pack(w2)
    np.testing.assert_array_equal(
        K.dense_forward_bf16(x, packed, b), composed_forward(x, w2, b, "linear")[1]
    )
    with pytest.raises(ValueError, match=r"w: expected shape \(12, 7\)"):
        packed.pack(np.zeros((7, 12), np.float32))


def test_dense_chain_takes_bf16_steps_with_the_per_layer_bits():
    # Bf16Weights as DenseChain steps (beside float32, int8 and activation-only steps): each
    # step the bits of its own kernel, at every batch size and thread count; the chain reads
    # the weights' packing of the moment, so a pack(w) shows in its next call.
    rng = np.random.default_rng(21)
    widths = [33, 64, 20, 10]
    ws = [
        (rng.standard_normal((k, n)) * 0.2).astype(np.float32) for k, n in zip(widths, widths[1:])
    ]
    bs = [rng.standard_normal(w.shape[1]).astype(np.float32) for w in ws]
    packed = K.Bf16Weights(ws[0])
    q = K.QuantizedWeights.quantize(ws[1])
    last = K.Bf16Weights(ws[2])
    chain = K.DenseChain(
        [(packed, bs[0], "gelu"), (q, bs[1], "relu"), (None, None, "tanh"),
         (last, None, "softmax")]
    )  # fmt: skip

    def composed(x):
        h = K.dense_forward_bf16(x, packed, bs[0], activation="gelu")
        h = K.activation_forward(K.dense_forward_int8(h, q, bs[1], activation="relu"), "tanh")
        return K.dense_forward_bf16(h, last, None, activation="softmax")

    for n in (1, 7, 300):
        x = rng.standard_normal((n, 33)).astype(np.float32)
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(chain(x, num_threads=threads), composed(x), strict=True)
    x = rng.standard_normal((5, 33)).astype(np.float32)
    before = chain(x)
    packed.pack(ws[0] * 2)
    after = chain(x)
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, composed(x))
    with pytest.raises(TypeError, match=r"steps\[1\] w: Bf16Weights need a float32 chain"):
        K.DenseChain([(np.ones((2, 33)), None, "relu"), (packed, None, "relu")])
    with pytest.raises(ValueError, match=r"steps\[1\] w: expected 64 rows"):
        K.DenseChain([(packed, None, "relu"), (last, None, "relu")])
    with pytest.raises(TypeError, match=r"steps\[0\] b: expected dtype float32"):
        K.DenseChain([(packed, np.ones(64), "relu")])


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_bitwise_identical_for_any_thread_count(threads):
    rng = np.random.default_rng(6)
    x, w, b = layer(rng, 130, 301, 97)
    packed = K.Bf16Weights(w, transposed=True, num_threads=threads)
    preact = np.empty((130, 97), np.float32)
    y = K.dense_forward_bf16(
        x, packed, b, activation="gelu", preact_out=preact, num_threads=threads
    )
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = K.dense_backward_bf16(
        dy, x, packed, preact=preact, activation="gelu", num_threads=threads
    )
    z, want_y = composed_forward(x, w, b, "gelu")
    np.testing.assert_array_equal(bits(y), bits(want_y))
    for got, expected in zip(grads, composed_backward(dy, x, w, z, "gelu")):
        np.testing.assert_array_equal(bits(got), bits(expected))


@pytest.mark.parametrize("bf16_io", [False, True])
@pytest.mark.parametrize(
    ("n", "k", "m"),
    # small enough for each product to run on one thread (side by side by choice), a 10-column
    # layer (dw transposed), an odd m (dx's A rounded as packed), larger products (each split
    # over the threads when run one after the other)
    [(1, 3, 2), (29, 31, 10), (64, 128, 10), (130, 301, 97), (256, 128, 33), (200, 256, 128)],
)
def test_backward_products_side_by_side_or_one_after_the_other_give_the_same_bits(n, k, m, bf16_io):
    rng = np.random.default_rng(n + k + m)
    x, w, b = layer(rng, n, k, m)
    packed = K.Bf16Weights(w, transposed=True)
    z, y = composed_forward(x, w, b, "relu")
    dy = rng.standard_normal((n, m)).astype(np.float32)
    if bf16_io:  # the float32 reference gets the bf16 values
        x, y, dy = x.astype(BF16), y.astype(BF16), dy.astype(BF16)
        z = K.matmul_bf16(x, w.astype(BF16), bias=b)
    want = composed_backward(dy.astype(np.float32), x.astype(np.float32), w, z, "relu")
    for threads in (1, 2, 3):
        for schedule in ("serial", "side_by_side"):
            got = _core._dense_backward_bf16_schedule_test(
                schedule, dy, x, packed, y, "relu", num_threads=threads
            )
            for name, g, e in zip(("dx", "dw", "db"), got, want):
                np.testing.assert_array_equal(
                    bits(g), bits(e), err_msg=f"{name} {schedule} threads={threads}"
                )
    # the automatic choice (side by side only where a pool worker spins): the same bits,
    # called back to back after a parallel product so that the workers spin for some calls
    big = K.Bf16Weights(rng.standard_normal((512, 256)).astype(np.float32))
    big_x = rng.standard_normal((256, 512)).astype(np.float32)
    results = []
    for _ in range(30):
        K.dense_forward_bf16(big_x, big, num_threads=2)
        results.append(K.dense_backward_bf16(dy, x, packed, y=y, activation="relu", num_threads=2))
    for got in results:
        for g, e in zip(got, want):
            np.testing.assert_array_equal(bits(g), bits(e))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("dy_bf16", [False, True])
def test_slopes_from_a_bf16_y_are_those_from_its_float32_values(activation, dy_bf16):
    """relu's and leaky_relu's derivative from a bf16 y is read off y's 16 bits in one pass
    with dy; the same values as from y widened to float32 (activation_backward's test on the
    float's bits): zeros of both signs, subnormals, infinities and NaN take the slope."""
    rng = np.random.default_rng(11)
    n, k, m = 37, 29, 66
    x, w, _ = layer(rng, n, k, m)
    packed = K.Bf16Weights(w, transposed=True)
    special = np.array(
        [0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf, np.nan, -np.nan, 3.0e38, -1.0], np.float32
    )
    y32 = rng.standard_normal((n, m)).astype(np.float32)
    y32.flat[rng.choice(n * m, 300, replace=False)] = np.resize(special, 300)
    y16 = y32.astype(BF16)
    # the NaNs just above +inf and -inf (signalling patterns a float32 rounding never makes)
    y16.view(np.uint16).flat[:2] = [0x7F81, 0xFF81]
    dy = rng.standard_normal((n, m)).astype(np.float32)
    dy.flat[:4] = [np.inf, -np.inf, np.nan, 0.0]  # dy * 0 keeps inf * 0 = NaN, as in float32
    if dy_bf16:
        dy = dy.astype(BF16)
    alpha = 0.3 if activation == "leaky_relu" else None
    got = K.dense_backward_bf16(dy, x, packed, y=y16, activation=activation, alpha=alpha)
    want = K.dense_backward_bf16(
        dy, x, packed, y=y16.astype(np.float32), activation=activation, alpha=alpha
    )
    for name, g, e in zip(("dx", "dw", "db"), got, want):
        np.testing.assert_array_equal(bits(g), bits(e), err_msg=name)


def test_backward_schedule_hook_checks_its_arguments():
    rng = np.random.default_rng(0)
    x, w, _ = layer(rng, 4, 6, 2)
    packed = K.Bf16Weights(w, transposed=True)
    y = dy = np.ones((4, 2), np.float32)
    hook = _core._dense_backward_bf16_schedule_test
    with pytest.raises(ValueError, match="schedule: expected 'serial' or 'side_by_side'"):
        hook("parallel", dy, x, packed, y, "relu")
    with pytest.raises(ValueError, match="w: expected Bf16Weights made with transposed=True"):
        hook("serial", dy, x, K.Bf16Weights(w), y, "relu")
    with pytest.raises(ValueError, match="activation: expected one whose derivative comes"):
        hook("serial", dy, x, packed, y, "gelu")
    with pytest.raises(ValueError, match="y: expected shape"):
        hook("serial", dy, x, packed, y[:3], "relu")


@pytest.mark.parametrize("shape", [(64, 784, 256), (64, 2000, 300)])
def test_a_packed_in_its_own_pass_or_per_task_gives_the_same_bits(shape):
    # Row tiles serving several column chunks are packed in a pass of their own on one thread
    # or for a large product (64x2000x300), by each task otherwise (64x784x256 on several
    # threads, tile_loop.hpp): the same words either way, so the same bits.
    rng = np.random.default_rng(7)
    x, w, b = layer(rng, *shape)
    packed = K.Bf16Weights(w)
    _, want = composed_forward(x, w, b, "relu")
    for threads in (1, 2, 3, 7):
        y = K.dense_forward_bf16(x, packed, b, activation="relu", num_threads=threads)
        np.testing.assert_array_equal(bits(y), bits(want), err_msg=f"threads={threads}")


@given(
    n=st.sampled_from([0, 1, 2, 3, 13, 14, 15, 29]),
    k=st.sampled_from([0, 1, 2, 3, 7, 31, 33, 257]),
    m=st.sampled_from([1, 2, 15, 17, 31, 33, 97]),
    seed=st.integers(0, 2**31),
    bf16_io=st.booleans(),
)
def test_hypothesis_shapes(n, k, m, seed, bf16_io):
    """With bf16_io, x, y, dy and dx are bf16 arrays (the float32 reference gets their values)."""
    rng = np.random.default_rng(seed)
    x, w, b = layer(rng, n, k, m)
    dy = rng.standard_normal((n, m)).astype(np.float32)
    if bf16_io:
        x, dy = K.from_bfloat16(K.to_bfloat16(x)), K.from_bfloat16(K.to_bfloat16(dy))
    io = (lambda a: K.to_bfloat16(a)) if bf16_io else (lambda a: a)
    dtype = "bfloat16" if bf16_io else "float32"
    packed = K.Bf16Weights(w, transposed=True)
    preact = np.empty((n, m), np.float32)
    y = K.dense_forward_bf16(
        io(x), packed, b, activation="relu", preact_out=preact, out_dtype=dtype
    )
    z, want = composed_forward(x, w, b, "relu")
    np.testing.assert_array_equal(y.view(np.uint8), io(want).view(np.uint8))
    grads = K.dense_backward_bf16(
        io(dy), io(x), packed, preact=preact, activation="relu", dx_dtype=dtype
    )
    expected = composed_backward(dy, x, w, z, "relu")
    for got, want in zip(grads, (io(expected[0]), *expected[1:])):
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def widened(a):
    return K.from_bfloat16(a) if a.dtype == BF16 else a


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh", "gelu", "softmax"])
@pytest.mark.parametrize(
    ("n", "k", "m", "threads"),
    # m = 3: the transposed forward and dw; odd and even m (dx's A rounded as packed or read
    # as bf16 rows); k = 1
    [(37, 19, 41, 1), (64, 33, 3, 2), (130, 1, 38, 3), (1, 784, 256, 2), (0, 5, 4, 1)],
)
def test_bf16_activations_give_the_bits_of_their_float32_values(activation, n, k, m, threads):
    """x, dy and y in bf16 are read as their float32 values; y and dx in bf16 are the float32
    results rounded to nearest even (to_bfloat16); dw and db are unchanged."""
    rng = np.random.default_rng(n + k + m)
    x32, w, b = layer(rng, n, k, m)
    x16 = K.to_bfloat16(x32)
    x = K.from_bfloat16(x16)
    packed = K.Bf16Weights(w, transposed=True)
    preact = np.empty((n, m), np.float32)
    y = K.dense_forward_bf16(x, packed, b, activation=activation, preact_out=preact)
    options = {"activation": activation, "num_threads": threads}
    y16 = K.dense_forward_bf16(x16, packed, b, out_dtype="bfloat16", **options)
    assert y16.dtype == BF16
    np.testing.assert_array_equal(y16.view(np.uint16), K.to_bfloat16(y).view(np.uint16))
    np.testing.assert_array_equal(bits(K.dense_forward_bf16(x16, packed, b, **options)), bits(y))
    dy16 = K.to_bfloat16(rng.standard_normal((n, m)).astype(np.float32))
    # the derivative from y where the activation takes it (bf16 y: its rounded values)
    from_y = activation not in NEEDS_Z and activation != "linear"
    for y_given in (y, y16) if from_y else (None,):
        given = {"y": y_given} if from_y else {"preact": preact}
        float32 = {"y": widened(y_given)} if from_y else given
        want = K.dense_backward_bf16(widened(dy16), x, packed, **options, **float32)
        dx16, dw, db = K.dense_backward_bf16(
            dy16, x16, packed, dx_dtype="bfloat16", **options, **given
        )
        assert dx16.dtype == BF16
        np.testing.assert_array_equal(dx16.view(np.uint16), K.to_bfloat16(want[0]).view(np.uint16))
        np.testing.assert_array_equal(bits(dw), bits(want[1]))
        np.testing.assert_array_equal(bits(db), bits(want[2]))


_SUBPROCESS = """
import json
import numpy as np
from densekit import _core
from densekit import kernels as K
rng = np.random.default_rng(7)
x = rng.standard_normal((21, 99)).astype(np.float32)
w = rng.standard_normal((99, 45)).astype(np.float32)
packed = K.Bf16Weights(w, transposed=True)
z = np.empty((21, 45), np.float32)
y = K.dense_forward_bf16(x, packed, activation="relu", preact_out=z)
grads = K.dense_backward_bf16(np.ones_like(y), x, packed, preact=z, activation="relu")
# an odd k over several column chunks on 1 thread: x's rows copied (or packed) all at once
x2 = rng.standard_normal((17, 1001)).astype(np.float32)
wide = K.Bf16Weights(rng.standard_normal((1001, 300)).astype(np.float32))
y2 = K.dense_forward_bf16(x2, wide, activation="relu", num_threads=1)
print(json.dumps({"path": K.bf16_config()["path"],
                  "bits": [a.view(np.uint32).ravel().tolist() for a in (y, *grads, y2)]}))
"""


@pytest.mark.parametrize(
    "env",
    [{"DENSEKIT_BF16": "emulated"}, {"DENSEKIT_ISA": "avx2"}, {"DENSEKIT_ISA": "portable"}],
)
def test_every_forced_path_gives_the_same_bits(env):
    """The products' path and the ISA of the rounding and packing code change no bit (relu:
    no vector math in the epilogue)."""
    # the baseline is a path of the emulation's rule: avx512_bf16 where amx is the default
    amx = _core.bf16_config()["path"] == "amx"
    base = json_of_child(_SUBPROCESS, {"DENSEKIT_BF16": "avx512_bf16"} if amx else {})
    forced = json_of_child(_SUBPROCESS, env)
    assert forced["path"] == "emulated"
    assert forced["bits"] == base["bits"]


def test_errors_name_the_argument():
    w = np.ones((4, 3), np.float32)
    packed = K.Bf16Weights(w)
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"w: expected densekit\.kernels\.Bf16Weights"):
        K.dense_forward_bf16(x, w)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 or bfloat16.*got float16 "):
        K.dense_forward_bf16(x.astype(np.float16), packed)
    with pytest.raises(TypeError, match="out: expected dtype float32, got bfloat16"):
        K.dense_forward_bf16(x, packed, out=np.empty((2, 3), BF16))
    with pytest.raises(TypeError, match="out: expected dtype bfloat16, got float32"):
        K.dense_forward_bf16(x, packed, out=np.empty((2, 3), np.float32), out_dtype="bfloat16")
    with pytest.raises(ValueError, match="out_dtype: expected 'float32' or 'bfloat16'"):
        K.dense_forward_bf16(x, packed, out_dtype="float16")
    with pytest.raises(TypeError, match="w: expected dtype float32, got float64"):
        K.Bf16Weights(w.astype(np.float64))
    with pytest.raises(ValueError, match=r"x: expected 4 columns \(w.shape\[0\]\)"):
        K.dense_forward_bf16(np.ones((2, 5), np.float32), packed)
    with pytest.raises(ValueError, match="b: expected shape"):
        K.dense_forward_bf16(x, packed, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="out: expected shape"):
        K.dense_forward_bf16(x, packed, out=np.empty((2, 4), np.float32))
    dy = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"w: need_dx needs Bf16Weights made with transposed=True"):
        K.dense_backward_bf16(dy, x, packed)
    with pytest.raises(ValueError, match="preact: activation 'gelu' needs the pre-activation"):
        K.dense_backward_bf16(dy, x, packed, activation="gelu", need_dx=False)
    with pytest.raises(ValueError, match="dy: expected shape"):
        K.dense_backward_bf16(np.ones((2, 4), np.float32), x, packed, need_dx=False)
    with pytest.raises(TypeError, match=r"dy: expected dtype float32 or bfloat16.*got float64"):
        K.dense_backward_bf16(dy.astype(np.float64), x, packed, need_dx=False)
    with pytest.raises(TypeError, match="preact: expected dtype float32, got bfloat16"):
        K.dense_backward_bf16(dy, x, packed, preact=dy.astype(BF16), need_dx=False)
    with pytest.raises(ValueError, match="dx_dtype: expected 'float32' or 'bfloat16'"):
        K.dense_backward_bf16(dy, x, K.Bf16Weights(w, transposed=True), dx_dtype="bf16")
    with pytest.raises(TypeError, match="dx_out: expected dtype bfloat16, got float32"):
        K.dense_backward_bf16(
            dy, x, K.Bf16Weights(w, transposed=True), dx_out=x.copy(), dx_dtype="bfloat16"
        )
    with pytest.raises(ValueError, match="dw_out: accumulate=True adds into dw_out"):
        K.dense_backward_bf16(dy, x, packed, need_dx=False, accumulate=True)
    out = np.empty((2, 3), np.float32)
    with pytest.raises(ValueError, match="out: must not share memory with preact_out"):
        K.dense_forward_bf16(x, packed, out=out, preact_out=out)
