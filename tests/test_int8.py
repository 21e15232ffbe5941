"""int8 inference kernels: per-column weight quantization and the int8 dense forward.

The integer part is exact, so every path (AVX512-VNNI's vpdpbusd, the int32 emulation) must
equal a NumPy integer reference bit for bit after the same float32 dequantization; against the
float32 product the error is bounded by the quantization steps.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import _core
from densekit import kernels as K

from .helpers import json_of_child

PATHS = list(_core.int8_config()["available"])
ELEMENTWISE = [name for name in K.ACTIVATIONS if K.ACTIVATION_INFO[name]["elementwise"]]


def rne_quantize(v, scale):
    """NumPy's form of the kernels' rounding: nearest even of v / scale in [-127, 127]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.rint(v.astype(np.float32) / scale.astype(np.float32))
    return np.where(scale == 0, 0, np.clip(q, -127, 127)).astype(np.int64)


def rne_quantize_rows(v, scale):
    """The kernels' rounding of x: nearest even of v * (1 / scale), the reciprocal in float32."""
    with np.errstate(invalid="ignore", divide="ignore"):
        inverse = (np.float32(1) / scale.astype(np.float32)).astype(np.float32)
        q = np.rint(v.astype(np.float32) * inverse)
    return np.where(scale == 0, 0, np.clip(q, -127, 127)).astype(np.int64)


def reference(x, qw, bias=None):
    """Float32 dequantized result from exact integer sums (no activation)."""
    scale_x = (np.abs(x).max(axis=1, initial=0.0) / np.float32(127)).astype(np.float32)
    xq = rne_quantize_rows(x, scale_x[:, None])
    exact = xq @ qw.weights.astype(np.int64)
    v = exact.astype(np.float32) * (scale_x[:, None] * qw.scales[None, :])
    return v if bias is None else v + bias


@pytest.mark.parametrize("k,n", [(0, 3), (1, 1), (5, 7), (33, 65), (784, 256)])
def test_weight_quantization_is_per_column_symmetric_round_to_even(k, n):
    rng = np.random.default_rng(k + n)
    w = rng.standard_normal((k, n)).astype(np.float32)
    if k:
        w[:, 0] = 0.0  # a zero column: scale 0, weights 0
    qw = K.QuantizedWeights.quantize(w)
    assert qw.shape == (k, n) and qw.weights.dtype == np.int8 and qw.scales.dtype == np.float32
    want_scales = (np.abs(w).max(axis=0, initial=0.0) / np.float32(127)).astype(np.float32)
    np.testing.assert_array_equal(qw.scales, want_scales)
    np.testing.assert_array_equal(qw.weights, rne_quantize(w, want_scales[None, :]))
    assert not qw.weights.flags.writeable and not qw.scales.flags.writeable
    if k:
        assert np.abs(qw.weights).max() == 127 or not np.any(w)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "m,k,n",
    [
        (0, 5, 3),
        (4, 0, 3),
        (3, 5, 0),
        (1, 1, 1),
        (1, 784, 256),
        (2, 3, 33),
        (7, 13, 17),
        (14, 129, 64),
        (15, 131, 97),
        (64, 255, 257),
        (29, 1, 2),
    ],
)
def test_dense_int8_equals_the_integer_reference_and_is_near_float(path, m, k, n):
    rng = np.random.default_rng(m * 100 + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    qw = K.QuantizedWeights.quantize(w)
    y = _core._dense_int8_path_test(path, x, qw, b)
    np.testing.assert_array_equal(y, reference(x, qw, b))
    # Each factor is within half a step: |x| <= s_x / 2 per element, |w| <= s_w / 2.
    scale_x = np.abs(x).max(axis=1, initial=0.0)[:, None] / 127
    scale_w = np.abs(w).max(axis=0, initial=0.0)[None, :] / 127
    bound = 0.5 * (scale_x * (np.abs(w).sum(0)[None, :]) + (np.abs(x).sum(1)[:, None]) * scale_w)
    bound += 0.25 * k * scale_x * scale_w + 1e-5 * (1 + np.abs(x) @ np.abs(w))
    assert (np.abs(y - (x.astype(np.float64) @ w + b)) <= bound).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_epilogue_activation_is_the_float32_engine_s(path, activation):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 70)).astype(np.float32)
    qw = K.QuantizedWeights.quantize(rng.standard_normal((70, 45)).astype(np.float32))
    b = rng.standard_normal(45).astype(np.float32)
    y = _core._dense_int8_path_test(path, x, qw, b, activation=activation)
    want = K.activation_forward(reference(x, qw, b), activation=activation)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(133, 517, 301), (64, 784, 256), (64, 2000, 300)])
def test_bitwise_identical_for_any_thread_count(path, shape):
    # the last two: x's row tiles packed by each task, or in a pass of their own (tile_loop.hpp)
    n, k, m = shape
    rng = np.random.default_rng(8)
    x = rng.standard_normal((n, k)).astype(np.float32)
    qw = K.QuantizedWeights.quantize(rng.standard_normal((k, m)).astype(np.float32))
    first = _core._dense_int8_path_test(path, x, qw, num_threads=1)
    for threads in (2, 3, 7):
        np.testing.assert_array_equal(
            _core._dense_int8_path_test(path, x, qw, num_threads=threads), first
        )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 3, 10, 16])
def test_narrow_layers_equal_the_integer_reference(path, n):
    # A layer of a few units over a large batch runs as y^T = (W + 128)^T q^T - 128 rowsum(q):
    # the same integer sums, the same dequantization, for any thread count; rows of zeros,
    # inf and NaN as in the direct product.
    rng = np.random.default_rng(n)
    x = rng.standard_normal((256, 131)).astype(np.float32)
    x[5] = 0.0
    x[6, 3] = np.nan
    x[7, 130] = -np.inf
    qw = K.QuantizedWeights.quantize(rng.standard_normal((131, n)).astype(np.float32))
    b = rng.standard_normal(n).astype(np.float32)
    ok = np.ones(256, bool)
    ok[[6, 7]] = False
    with np.errstate(invalid="ignore"):
        want = K.activation_forward(reference(x[ok], qw, b), activation="relu")
    for threads in (1, 2, 3):
        y = _core._dense_int8_path_test(path, x, qw, b, activation="relu", num_threads=threads)
        np.testing.assert_array_equal(y[ok], want)
        np.testing.assert_array_equal(y[5], np.maximum(b, 0))
        assert np.isnan(y[[6, 7]]).all()


@pytest.mark.parametrize("path", PATHS)
def test_rows_are_quantized_in_blocks_with_each_row_s_own_scale(path):
    # x's rows are quantized 16 at a time (their peaks and scales together): special rows at
    # the edges of the blocks and in a short last block give what they give alone.
    rng = np.random.default_rng(12)
    x = rng.standard_normal((37, 131)).astype(np.float32)
    x[0] = 0.0
    x[15, 9] = np.nan
    x[16, 130] = np.inf
    x[17] *= np.float32(1e-30)  # a tiny scale, still normal
    x[18] = 0.0
    x[18, 4] = np.float32(1e-44)  # a subnormal peak: its scale is 0
    x[31] *= np.float32(1e30)
    x[36, 0] = -np.inf
    qw = K.QuantizedWeights.quantize(rng.standard_normal((131, 50)).astype(np.float32))
    b = rng.standard_normal(50).astype(np.float32)
    bad = np.zeros(37, bool)
    bad[[15, 16, 36]] = True
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference(x[~bad], qw, b)
    for threads in (1, 2, 3):
        y = _core._dense_int8_path_test(path, x, qw, b, num_threads=threads)
        np.testing.assert_array_equal(y[~bad], want)
        assert np.isnan(y[bad]).all()
        np.testing.assert_array_equal(y[[0, 18]], np.stack([b, b]))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [64, 127, 200])
def test_row_quantization_ties_to_even_and_clamps_at_127(path, k):
    # Each row's peak is 127 (scale 1): half-integers are ties (to even), and the values at
    # +-127 and the largest float32 below 127.5 (rounds to 127) sit at the clamps. With
    # w = I, every output is one quantized x times its scales, so one wrong byte shows.
    rng = np.random.default_rng(k)
    x = (rng.integers(-254, 255, size=(5, k)) / np.float32(2)).astype(np.float32)
    x[:, 0] = 127.0
    x[1, 1:9] = [0.5, -0.5, 1.5, -1.5, 126.5, -126.5, -127.0, 2.5]
    x[2, -3:] = [np.nextafter(np.float32(127.5), 0), -127.0, 125.5]
    qw = K.QuantizedWeights.quantize(np.eye(k, dtype=np.float32))
    y = _core._dense_int8_path_test(path, x, qw)
    np.testing.assert_array_equal(y, reference(x, qw))
    np.testing.assert_array_equal(y[1, 1:9], [0, 0, 2, -2, 126, -126, -127, 2])


def test_special_rows_zero_and_non_finite():
    qw = K.QuantizedWeights.quantize(np.ones((6, 4), np.float32))
    x = np.zeros((3, 6), np.float32)
    x[1, 2] = np.inf
    x[2] = np.arange(6)
    y = K.dense_forward_int8(x, qw, np.full(4, 0.5, np.float32))
    np.testing.assert_array_equal(y[0], 0.5)  # a zero row: the bias
    assert np.isnan(y[1]).all()
    np.testing.assert_array_equal(y[2], reference(x[2:], qw, np.full(4, 0.5, np.float32))[0])


@given(
    m=st.sampled_from([0, 1, 2, 3, 5, 13, 14, 15, 31, 33, 70]),
    k=st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 63, 65, 255, 257, 513]),
    n=st.sampled_from([0, 1, 15, 17, 31, 33, 97, 129, 257]),
    seed=st.integers(0, 2**31),
)
def test_hypothesis_shapes_on_every_path(m, k, n, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * rng.uniform(1e-3, 1e3)).astype(np.float32)
    qw = K.QuantizedWeights.quantize(rng.standard_normal((k, n)).astype(np.float32))
    want = reference(x, qw)
    for path in PATHS:
        np.testing.assert_array_equal(_core._dense_int8_path_test(path, x, qw), want)


def test_from_int8_round_trips_and_checks_its_inputs():
    rng = np.random.default_rng(9)
    qw = K.QuantizedWeights.quantize(rng.standard_normal((20, 7)).astype(np.float32))
    again = K.QuantizedWeights.from_int8(qw.weights, qw.scales)
    x = rng.standard_normal((5, 20)).astype(np.float32)
    np.testing.assert_array_equal(K.dense_forward_int8(x, again), K.dense_forward_int8(x, qw))
    with pytest.raises(ValueError, match=r"scales: expected the float32 scales.*without scales"):
        K.QuantizedWeights.from_int8(qw.weights, None)
    with pytest.raises(TypeError, match="weights: expected dtype int8, got uint8"):
        K.QuantizedWeights.from_int8(qw.weights.view(np.uint8), qw.scales)
    with pytest.raises(ValueError, match=r"scales: expected shape \(7,\)"):
        K.QuantizedWeights.from_int8(qw.weights, qw.scales[:3].copy())
    with pytest.raises(ValueError, match="scales: expected finite scales >= 0"):
        K.QuantizedWeights.from_int8(qw.weights, -qw.scales)
    bad = qw.weights.copy()
    bad[0, 0] = -128
    with pytest.raises(ValueError, match=r"weights: expected values in \[-127, 127\]"):
        K.QuantizedWeights.from_int8(bad, qw.scales)


@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_row_activations_run_over_the_finished_rows(activation):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((7, 33)).astype(np.float32)
    qw = K.QuantizedWeights.quantize(rng.standard_normal((33, 10)).astype(np.float32))
    b = rng.standard_normal(10).astype(np.float32)
    linear = K.dense_forward_int8(x, qw, b)
    got = K.dense_forward_int8(x, qw, b, activation=activation)
    np.testing.assert_array_equal(got, K.activation_forward(linear, activation))


def test_errors_name_the_argument():
    qw = K.QuantizedWeights.quantize(np.ones((4, 3), np.float32))
    x = np.ones((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"w: expected densekit\.kernels\.QuantizedWeights"):
        K.dense_forward_int8(x, np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        K.dense_forward_int8(x.astype(np.float64), qw)
    with pytest.raises(ValueError, match=r"x: expected 4 columns \(w.shape\[0\]\)"):
        K.dense_forward_int8(np.ones((2, 5), np.float32), qw)
    with pytest.raises(ValueError, match="b: expected shape"):
        K.dense_forward_int8(x, qw, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="w: expected finite weights"):
        K.QuantizedWeights.quantize(np.array([[np.nan]], np.float32))
    with pytest.raises(ValueError, match="out: expected shape"):
        K.dense_forward_int8(x, qw, out=np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="path: expected 'amx', 'avx512_vnni' or 'emulated'"):
        _core._dense_int8_path_test("tpu", x, qw)


def test_dense_chain_takes_int8_steps_with_the_per_layer_bits():
    # A model's int8 inference in one call (DenseChain steps with QuantizedWeights), beside
    # float32 and activation-only steps: each step the bits of its own kernel, at every batch
    # size and thread count.
    rng = np.random.default_rng(12)
    widths = [37, 64, 17, 10]
    ws = [
        (rng.standard_normal((k, n)) * 0.2).astype(np.float32) for k, n in zip(widths, widths[1:])
    ]
    qs = [K.QuantizedWeights.quantize(w) for w in ws]
    bs = [rng.standard_normal(w.shape[1]).astype(np.float32) for w in ws]
    chain = K.DenseChain(
        [(qs[0], bs[0], "relu"), (ws[1], bs[1], "leaky_relu", 0.1), (None, None, "tanh"),
         (qs[2], None, "softmax")]
    )  # fmt: skip
    assert (len(chain), chain.input_width, chain.output_width) == (4, 37, 10)
    for n in (1, 7, 300):
        x = rng.standard_normal((n, 37)).astype(np.float32)
        h = K.dense_forward_int8(x, qs[0], bs[0], activation="relu")
        h = K.dense_forward(h, ws[1], bs[1], "leaky_relu", alpha=0.1)
        h = K.dense_forward_int8(K.activation_forward(h, "tanh"), qs[2], activation="softmax")
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(chain(x, num_threads=threads), h, strict=True)
        out = np.empty((n, 10), np.float32)
        assert chain(x, out=out) is out
        np.testing.assert_array_equal(out, h)


def test_dense_chain_int8_steps_check_their_inputs():
    q = K.QuantizedWeights.quantize(np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match=r"steps\[1\] w: QuantizedWeights need a float32 chain"):
        K.DenseChain([(np.ones((2, 4)), None, "relu"), (q, None, "relu")])
    with pytest.raises(TypeError, match=r"steps\[1\] w: expected dtype float32"):
        K.DenseChain([(q, None, "relu"), (np.ones((3, 2)), None, "relu")])
    with pytest.raises(ValueError, match=r"steps\[1\] w: expected 3 rows .*got shape \(4, 3\)"):
        K.DenseChain([(q, None, "relu"), (q, None, "relu")])
    with pytest.raises(ValueError, match=r"steps\[0\] b: expected shape \(3,\)"):
        K.DenseChain([(q, np.ones(4, np.float32), "relu")])
    with pytest.raises(TypeError, match=r"steps\[0\] b: expected dtype float32"):
        K.DenseChain([(q, np.ones(3), "relu")])
    chain = K.DenseChain([(q, None, "relu")])
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        chain(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\)"):
        chain(np.ones((2, 5), np.float32))


_SUBPROCESS = """
import json
import numpy as np
from densekit import _core
rng = np.random.default_rng(10)
x = rng.standard_normal((23, 301)).astype(np.float32)
qw = _core.QuantizedWeights.quantize(rng.standard_normal((301, 77)).astype(np.float32))
y = _core.dense_forward_int8(x, qw, np.ones(77, np.float32), activation="relu")
print(json.dumps({"config": _core.int8_config(), "bits": y.view(np.uint32).tolist()}))
"""


@pytest.mark.parametrize(
    "env", [{"DENSEKIT_ISA": "avx2"}, {"DENSEKIT_ISA": "portable"}, {"DENSEKIT_INT8": "emulated"}]
)
def test_forced_paths_give_the_same_bits(env):
    def child(extra):
        return json_of_child(_SUBPROCESS, extra)

    base, forced = child({}), child(env)
    assert forced["config"]["path"] == "emulated"
    assert forced["bits"] == base["bits"]  # relu is exact on every ISA
