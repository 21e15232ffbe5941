"""The matrix-product engine on every ISA this CPU runs, against a float64 NumPy reference.

Every ISA (AVX-512F, AVX2+FMA, portable) x dtype x (trans_a, trans_b) x epilogue is run
in-process through the test hook ``_core._gemm_isa_test`` on awkward shapes; bitwise
equality across thread counts is checked per ISA; dense_forward / dense_backward are checked
per ISA in a subprocess that forces the ISA with ``DENSEKIT_ISA``.

Tolerance: float32 results are within 4 * eps32 * sqrt(k + 2) * (|A| @ |B| + |C| + |bias|)
(+ a few ulp of the output for the activation) of the float64 reference; float64 likewise
with eps64.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import densekit
from densekit import _core
from densekit import kernels as K

if __package__:
    from .helpers import at_offset
else:  # imported as a top-level module by the child processes below (tests/ on sys.path)
    from helpers import at_offset

ISAS = list(densekit.build_info()["gemm_isas_available"])
ELEMENTWISE = [name for name in K.ACTIVATIONS if K.ACTIVATION_INFO[name]["elementwise"]]
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
DTYPES = [np.float32, np.float64]
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]

# (m, n, k): empty, single, primes, tile edges (main tiles avx512 14x32, avx2 6x16, portable
# 6x8 in float32, half the columns in float64; wide tiles for m <= 4), several k blocks (kc
# <= 256, float64 192), several column blocks (nc 1024 float32 columns, 512 float64), enough
# row tiles to pack B;
# with B transposed and no epilogue, m <= 4 takes the dot-product path.
SHAPES = [
    (0, 5, 3),
    (4, 0, 3),
    (3, 5, 0),
    (1, 1, 1),
    (1, 7, 13),
    (2, 33, 17),
    (4, 65, 31),
    (5, 17, 7),
    (7, 13, 17),
    (13, 31, 33),
    (17, 63, 65),
    (31, 1, 127),
    (33, 127, 257),
    (63, 65, 300),
    (127, 33, 13),
    (257, 31, 63),
    (1, 600, 257),
    (3, 1100, 40),
    (7, 300, 200),  # with B transposed and no epilogue: computed as C^T = B^T A^T
]


def act_reference(name, z, alpha=None):
    """float64 activation."""
    if name == "linear":
        return z
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, (0.01 if alpha is None else alpha) * z)
    if name == "elu":
        return np.where(z > 0, z, (1.0 if alpha is None else alpha) * np.expm1(np.minimum(z, 0)))
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    if name == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
    if name == "silu":
        return z * act_reference("sigmoid", z)
    if name == "selu":
        return np.where(z > 0, SELU_SCALE * z, SELU_SCALE * SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if name == "relu6":
        return np.minimum(np.maximum(z, 0), 6.0)
    if name == "hard_sigmoid":
        return np.minimum(np.maximum(z + 3, 0), 6.0) / 6
    if name == "softsign":
        return z / (1 + np.abs(z))
    if name == "mish":
        return z * np.tanh(np.logaddexp(0, z))
    if name == "exponential":
        return np.exp(z)
    raise AssertionError(name)


def tolerance(dtype, k, scale, out):
    eps = np.finfo(dtype).eps
    return 4 * eps * math.sqrt(k + 2) * scale + 4 * eps * np.abs(out) + np.finfo(dtype).tiny


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = (rng.standard_normal((n, k) if trans_b else (k, n)) / math.sqrt(max(k, 1))).astype(dtype)
    return a, b


def run_gemm_case(isa, dtype, trans_a, trans_b, epilogue, m, n, k, seed=0, num_threads=None):
    rng = np.random.default_rng(seed + 7919 * m + 104729 * n + k)
    a, b = operands(rng, m, n, k, trans_a, trans_b, dtype)
    bias = rng.standard_normal(n).astype(dtype) if epilogue.get("bias") else None
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = c0.copy()
    preact = np.full((m, n), np.nan, dtype) if epilogue.get("preact") else None
    activation = epilogue.get("activation", "linear")
    accumulate = epilogue.get("accumulate", False)
    _core._gemm_isa_test(
        isa,
        a,
        b,
        c,
        trans_a=trans_a,
        trans_b=trans_b,
        bias=bias,
        preact=preact,
        activation=activation,
        accumulate=accumulate,
        num_threads=num_threads,
    )
    return a, b, bias, c0, c, preact


def check_gemm(isa, dtype, trans_a, trans_b, epilogue, m, n, k):
    a, b, bias, c0, c, preact = run_gemm_case(isa, dtype, trans_a, trans_b, epilogue, m, n, k)
    a64 = (a.T if trans_a else a).astype(np.float64)
    b64 = (b.T if trans_b else b).astype(np.float64)
    z = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    if epilogue.get("accumulate"):
        z = z + c0
        scale = scale + np.abs(c0)
    if bias is not None:
        z = z + bias
        scale = scale + np.abs(bias)
    activation = epilogue.get("activation", "linear")
    y = act_reference(activation, z)
    err = np.abs(c.astype(np.float64) - y)
    # the product's error is carried through f, scaled by f' (exponential's, selu's > 1)
    gain = np.maximum(1.0, np.abs(derivative_reference(activation, z)))
    tol = 2 * tolerance(dtype, k, scale * gain, y)
    assert np.all(err <= tol), (
        f"{isa} {dtype.__name__} {(m, n, k)}: max error {err.max():.3g}, "
        f"worst ratio {np.max(err / tol):.3g}"
    )
    if preact is not None:
        assert np.all(np.abs(preact - z) <= tolerance(dtype, k, scale, z))


EPILOGUES = (
    [{"name": "none"}, {"name": "bias", "bias": True}]
    + [{"name": f"bias+{a}", "bias": True, "activation": a} for a in ELEMENTWISE if a != "linear"]
    + [
        {"name": "preact", "bias": True, "preact": True, "activation": "relu"},
        {"name": "preact+gelu", "preact": True, "activation": "gelu"},
        {"name": "accumulate", "accumulate": True},
        {
            "name": "accumulate+bias+leaky",
            "accumulate": True,
            "bias": True,
            "activation": "leaky_relu",
            "preact": True,
        },
    ]
)


@pytest.mark.parametrize("epilogue", EPILOGUES, ids=lambda e: e["name"])
@pytest.mark.parametrize("trans", TRANSPOSES, ids=lambda t: f"tA{int(t[0])}tB{int(t[1])}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("isa", ISAS)
def test_gemm_matches_reference(isa, dtype, trans, epilogue):
    for m, n, k in SHAPES:
        check_gemm(isa, dtype, trans[0], trans[1], epilogue, m, n, k)


# Shapes that use several tasks, k blocks, packed and unpacked panels, wide and main tiles.
THREAD_SHAPES = [(1, 300, 70), (3, 257, 65), (33, 127, 257), (130, 70, 300), (7, 1100, 200)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("isa", ISAS)
def test_gemm_bitwise_across_threads(isa, dtype):
    epilogues = [
        {},
        {"bias": True, "preact": True, "activation": "relu"},
        {"accumulate": True, "bias": True, "activation": "tanh"},
    ]
    for m, n, k in THREAD_SHAPES:
        for trans_a, trans_b in TRANSPOSES:
            for epilogue in epilogues:
                first = None
                for threads in (1, 2, 3, 7):
                    *_, c, preact = run_gemm_case(
                        isa, dtype, trans_a, trans_b, epilogue, m, n, k, num_threads=threads
                    )
                    got = (c.tobytes(), None if preact is None else preact.tobytes())
                    if first is None:
                        first = got
                    assert got == first, (isa, dtype, (m, n, k), trans_a, trans_b, threads)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("isa", ISAS)
def test_gemm_bitwise_across_alignments(isa, dtype):
    """Panels are shifted to align loads or stores to cache lines; no bit may move."""
    rng = np.random.default_rng(5)
    for m, n, k in [(3, 256, 70), (33, 256, 100), (130, 256, 300), (40, 96, 64)]:
        for trans_a, trans_b in TRANSPOSES:
            a, b = operands(rng, m, n, k, trans_a, trans_b, dtype)
            bias = rng.standard_normal(n).astype(dtype)
            c0 = rng.standard_normal((m, n)).astype(dtype)
            first = None
            for offsets in [(0, 0, 0), (1, 3, 5), (4, 4, 4), (3, 0, 12), (0, 7, 2)]:
                for threads in (1, 2):
                    a_, b_, c = (at_offset(v, o) for v, o in zip((a, b, c0), offsets))
                    _core._gemm_isa_test(
                        isa,
                        a_,
                        b_,
                        c,
                        trans_a=trans_a,
                        trans_b=trans_b,
                        bias=bias,
                        activation="relu",
                        accumulate=True,
                        num_threads=threads,
                    )
                    if first is None:
                        first = c.tobytes()
                    assert c.tobytes() == first, (isa, (m, n, k), trans_a, trans_b, offsets)


@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("isa", ISAS)
def test_short_products_read_b_in_place_at_any_alignment(isa, dtype, activation):
    """m <= 4 reads B in place with masked first and last vectors, shifted to B's cache lines
    (C, bias and preact shifted alike): every offset gives the same bits as the reference
    within tolerance and as each other exactly, and nothing outside C or preact is written."""
    rng = np.random.default_rng(6)
    for m, n, k in [(1, 256, 70), (1, 300, 9), (2, 17, 33), (3, 129, 5), (4, 100, 260), (1, 5, 3)]:
        a, b = operands(rng, m, n, k, False, False, dtype)
        bias = rng.standard_normal(n).astype(dtype)
        c0 = rng.standard_normal((m, n)).astype(dtype)
        expected = None
        for offsets in [(0, 0, 0, 0), (1, 3, 5, 7), (2, 15, 1, 9), (0, 7, 2, 3), (5, 1, 0, 14)]:
            for threads in (1, 2):
                a_, b_, bias_ = (at_offset(v, o) for v, o in zip((a, b, bias), offsets))
                # C and preact inside guard bands that must stay untouched
                c_band = at_offset(np.full(m * n + 32, 7.0, dtype), offsets[3])
                z_band = at_offset(np.full(m * n + 32, 7.0, dtype), offsets[0])
                c = c_band[16 : 16 + m * n].reshape(m, n)
                z = z_band[16 : 16 + m * n].reshape(m, n)
                c[...] = c0
                _core._gemm_isa_test(
                    isa,
                    a_,
                    b_,
                    c,
                    bias=bias_,
                    preact=z,
                    activation=activation,
                    accumulate=True,
                    num_threads=threads,
                )
                for band in (c_band, z_band):
                    assert (band[:16] == 7.0).all() and (band[16 + m * n :] == 7.0).all()
                if expected is None:
                    reference = a.astype(np.float64) @ b.astype(np.float64) + c0 + bias
                    np.testing.assert_allclose(
                        z,
                        reference,
                        rtol=1e-4 if dtype == np.float32 else 1e-12,
                        atol=1e-4 if dtype == np.float32 else 1e-12,
                    )
                    expected = (c.tobytes(), z.tobytes())
                assert (c.tobytes(), z.tobytes()) == expected, (isa, (m, n, k), offsets, threads)


def ulp_distance(a, b):
    """|a - b| in float32 units in the last place (0 where both are NaN)."""
    ai, bi = (v.astype(np.float32).view(np.int32).astype(np.int64) for v in (a, b))
    ai = np.where(ai < 0, -(ai & 0x7FFFFFFF), ai)
    bi = np.where(bi < 0, -(bi & 0x7FFFFFFF), bi)
    return np.where(np.isnan(a) & np.isnan(b), 0, np.abs(ai - bi))


@pytest.mark.parametrize("isa", ISAS)
def test_vector_activations_within_2_ulp_of_scalar(isa):
    """float32 elu/sigmoid/tanh/softplus applied by the ISA's vector math (z = x @ I exactly) stay
    within 2 ulp of scalar::forward (the portable epilogue); gelu_tanh within 2e-5 relative of
    float64 (scalar::forward cancels in 1 + tanh(u) for z << 0: the vector form does not).
    The vector math never makes a subnormal (each costs a microcode assist): where
    scalar::forward's result is subnormal it may give 0, and from a normal input it gives no
    subnormal output. The portable ISA has no vector math and must match scalar::forward
    exactly."""
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal(4000) * s for s in (0.01, 0.3, 1.0, 3.0, 10.0, 40.0)]
    specials = [0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, 0.625, -0.625, -0.5, 88.4, -104.0]
    values = np.concatenate([*parts, np.linspace(-110, 100, 4001), specials]).astype(np.float32)
    x = np.resize(values, (len(values) + 15) // 16 * 16).reshape(-1, 16)
    eye = np.eye(16, dtype=np.float32)
    for act in ("elu", "sigmoid", "tanh", "gelu_tanh", "gelu", "softplus"):
        y = np.empty_like(x)
        _core._gemm_isa_test(isa, x, eye, y, activation=act)
        scalar = np.empty_like(x)  # the portable ISA's epilogue is scalar::forward itself
        _core._gemm_isa_test("portable", x, eye, scalar, activation=act)
        # activation_forward's vector path (every length: masked tails) gives the epilogue's
        # bits, from the epilogue's z = x @ I (-0 there is +0)
        z = (x + np.float32(0)).ravel()
        for count in (x.size, 1, 15, 17):
            alone = np.full(count, 7.0, np.float32)
            done = _core._vector_math_isa_test(isa, alone, z[:count], activation=act)
            assert done == (isa != "portable"), (isa, act)
            if done:
                assert alone.tobytes() == y.ravel()[:count].tobytes(), (isa, act, count)
        tiny = np.finfo(np.float32).tiny  # below it float32 has no relative precision
        if isa != "portable":
            made = (np.abs(y) < tiny) & (y != 0) & ((np.abs(x) >= tiny) | (x == 0))
            assert not made.any(), (isa, act, x[made][:4], y[made][:4])
        if isa == "portable":  # no vector math: scalar::forward itself
            assert ulp_distance(y, scalar).max() == 0, act
        elif act == "gelu":  # erfc as t Q(2t - 1) exp(-x^2): within 4e-7 relative of float64
            z = x.astype(np.float64)
            cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z.ravel()])
            truth = z * cdf.reshape(z.shape)
            assert np.all(np.abs(y - truth) <= 2e-6 * np.abs(truth) + tiny), isa
        elif act == "gelu_tanh":
            z = x.astype(np.float64)
            u = math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)
            with np.errstate(over="ignore"):
                truth = z / (1 + np.exp(-2 * u))
            assert np.all(np.abs(y - truth) <= 2e-5 * np.abs(truth) + 1e-30), isa
        else:
            reference = scalar
            flushed = (y == 0) & (np.abs(reference) < tiny)
            assert ulp_distance(np.where(flushed, reference, y), reference).max() <= 2, (isa, act)


def float64_derivative(act, z, alpha=1.0):
    """f'(z) in float64, and what float32 rounding of its terms scales with (1 - s, 1 - tanh^2
    and the gelu forms cancel)."""

    def s(v):  # sigmoid, without overflow or cancellation
        e = np.exp(-np.abs(v))
        return np.where(v >= 0, 1 / (1 + e), e / (1 + e))

    if act == "elu":
        d = np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0)))
        return d, np.abs(d)
    if act == "sigmoid":  # 1 - s loses s's rounding relative to itself
        return s(z) * (1 - s(z)), s(z)
    if act == "tanh":
        t = np.tanh(z)
        return 1 - t * t, 1 + t * t
    if act == "softplus":
        return s(z), s(z)
    if act == "gelu":
        cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z.ravel()]).reshape(z.shape)
        z_pdf = z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return cdf + z_pdf, cdf + np.abs(z_pdf)
    assert act == "gelu_tanh"
    c = math.sqrt(2 / math.pi)
    u2 = 2 * c * (z + 0.044715 * z**3)  # rounded in float32: s(u2) inherits |u2| roundings
    sg = s(u2)
    du = c * (1 + 3 * 0.044715 * z * z)
    return sg + 2 * z * sg * (1 - sg) * du, (sg + np.abs(2 * z * sg * du)) * (1 + np.abs(u2))


@pytest.mark.parametrize("isa", ISAS)
def test_vector_derivatives_match_float64(isa):
    """dz = dy * f'(z) by the ISA's vector math (what activation_backward and dense_backward
    use for f' from z) is within a few float32 roundings of float64, at every length (masked
    tails), and makes no subnormal where the result is normal; the portable ISA and those with
    no vector form report False and write nothing."""
    rng = np.random.default_rng(11)
    parts = [rng.standard_normal(3000) * s for s in (0.01, 0.5, 1.0, 3.0, 10.0, 40.0)]
    specials = [0.0, -0.0, 1e-30, -1e-30, 0.625, -0.625, -0.7518, 9.0, -9.0, 13.0, -13.2, -14.0]
    z = np.concatenate([*parts, np.linspace(-110, 100, 4001), specials]).astype(np.float32)
    dy = (rng.uniform(0.5, 2.0, z.size) * rng.choice([-1, 1], z.size)).astype(np.float32)
    tiny = np.finfo(np.float32).tiny
    for act, alpha in [("elu", 0.7), ("sigmoid", None), ("tanh", None), ("softplus", None),
                       ("gelu", None), ("gelu_tanh", None)]:  # fmt: skip
        for count in (z.size, 1, 15, 17):  # masked tails
            dz = np.full(count, 7.0, np.float32)
            done = _core._vector_math_isa_test(
                isa, dz, z[:count], activation=act, alpha=alpha, dy=dy[:count]
            )
            if isa == "portable":
                assert not done and np.all(dz == 7.0), act
                continue
            assert done, (isa, act)
            d, scale = float64_derivative(act, z[:count].astype(np.float64), alpha or 1.0)
            truth = dy[:count] * d
            # + 1e-35: sigmoid(2u) of gelu_tanh is 0 below float32's smallest normal number,
            # and 2 z u' (up to ~300 there) scales that.
            bound = 8 * 2.0**-24 * np.abs(dy[:count]) * scale + 1e-35
            bad = ~(np.abs(dz - truth) <= bound)
            assert not bad.any(), (isa, act, z[:count][bad][:4], dz[bad][:4], truth[bad][:4])
            made = (np.abs(dz) < tiny) & (dz != 0) & (np.abs(truth) >= tiny)
            assert not made.any(), (isa, act, z[:count][made][:4])
    for act in ("linear", "relu", "leaky_relu"):  # softmax: test_vector_softmax_backward
        dz = np.full(16, 7.0, np.float32)
        assert not _core._vector_math_isa_test(isa, dz, z[:16], activation=act, dy=dy[:16])
        assert not _core._vector_math_isa_test(isa, dz, z[:16], activation=act)
        assert np.all(dz == 7.0)


FLOAT64_ACTIVATIONS = ("elu", "sigmoid", "tanh", "gelu_tanh", "gelu", "softplus")


def float64_inputs(seed):
    """Values across float64's range of interest: tails where exp, erfc and the sigmoid
    leave the normal range (|z| ~ 37-38 for gelu, ~708 for exp), the polynomial seams (0.625,
    |z / sqrt 2| = 1 and 8), signed zeros and subnormal inputs."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal(2000) * s for s in (1e-3, 0.3, 1.0, 3.0, 10.0, 40.0, 400.0)]
    seams = [0.625, -0.625, math.sqrt(2), -math.sqrt(2), 8 * math.sqrt(2), -8 * math.sqrt(2)]
    specials = [0.0, -0.0, 1e-300, -1e-300, 5e-324, -0.5, 19.1, -19.1, 708.4, -745.0, -37.7]
    specials += [1e60, -1e60, 1e150, -1e150]
    seams = [v * f for v in seams for f in (1 - 2e-16, 1.0, 1 + 2e-16)]
    values = [*parts, np.linspace(-800, 800, 4001), np.linspace(-39, -36, 1001), seams, specials]
    return np.concatenate(values)


@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "portable"])
def test_float64_vector_activations(isa):
    """float64 activations by the ISA's vector math (exp by its Taylor series, Cephes's tanh,
    log and erf/erfc rationals): within 3 ulp of scalar::forward (std::exp, std::log1p...);
    gelu within (16 + z^2) ulp: 1 - erf loses ~3 bits near |z / sqrt 2| = 1, and
    scalar::forward's erfc(-z / sqrt 2) inherits the rounding of its argument times 2 a^2 (the
    vector form takes a^2 from z; against 40-digit mpmath it was within 7 ulp everywhere);
    gelu_tanh within 1e-12 relative of float64 (scalar::forward cancels for z << 0); no
    subnormal output from a normal input; activation_forward's path gives the epilogue's bits
    at every length."""
    values = float64_inputs(5)
    x = np.resize(values, (len(values) + 7) // 8 * 8).reshape(-1, 8)
    eye = np.eye(8)
    tiny = np.finfo(np.float64).tiny
    eps = np.finfo(np.float64).eps
    for act in FLOAT64_ACTIVATIONS:
        y = np.empty_like(x)
        _core._gemm_isa_test(isa, x, eye, y, activation=act)
        scalar = np.empty_like(x)
        _core._gemm_isa_test("portable", x, eye, scalar, activation=act)
        z = (x + 0.0).ravel()
        for count in (x.size, 1, 7, 9):
            alone = np.full(count, 7.0)
            assert _core._vector_math_isa_test(isa, alone, z[:count], activation=act)
            assert alone.tobytes() == y.ravel()[:count].tobytes(), (isa, act, count)
        made = (np.abs(y) < tiny) & (y != 0) & ((np.abs(x) >= tiny) | (x == 0))
        assert not made.any(), (isa, act, x[made][:4], y[made][:4])
        with np.errstate(over="ignore", invalid="ignore"):
            if act == "gelu_tanh":
                u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
                truth = x / (1 + np.exp(-2 * u))
                bound = 1e-12 * np.abs(truth) + tiny
            else:
                truth = scalar
                bound = ((16 + x * x) if act == "gelu" else 3) * eps * np.abs(truth)
        flushed = (y == 0) & (np.abs(truth) < 2 * tiny)  # at or below the normal range
        # Overflowing values and infinities: as the float64 formulas (gelu(-inf) and
        # gelu_tanh(-inf) are -inf * 0 = NaN there, as in torch).
        extreme = np.array([1e308, -1e308, np.inf, -np.inf, np.nan, -np.nan])
        got = np.empty_like(extreme)
        assert _core._vector_math_isa_test(isa, got, extreme, activation=act)
        with np.errstate(over="ignore", invalid="ignore"):
            want = act_reference(act, extreme)
        close = np.isclose(got, want, rtol=1e-14, atol=0) | (np.isnan(got) & np.isnan(want))
        assert close.all(), (isa, act, got, want)
        same = (y == truth) | (np.isnan(y) & np.isnan(truth))  # infinities, NaN
        with np.errstate(invalid="ignore"):
            bad = ~((np.abs(y - truth) <= bound) | flushed | same)
        assert not bad.any(), (isa, act, x[bad][:4], y[bad][:4], truth[bad][:4])


@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "portable"])
def test_float64_vector_derivatives_and_softmax(isa):
    """float64 dz = dy * f'(z) and row softmax by the ISA's vector math: within a few float64
    roundings of the NumPy formulas (for gelu, whose reference rounds exp's argument -z^2 / 2,
    times 1 + z^2 / 2), at every length (masked tails), with no subnormal where the result is
    normal."""
    rng = np.random.default_rng(12)
    z = float64_inputs(6)
    dy = rng.uniform(0.5, 2.0, z.size) * rng.choice([-1, 1], z.size)
    tiny = np.finfo(np.float64).tiny
    for act, alpha in [("elu", 0.7), ("sigmoid", None), ("tanh", None), ("softplus", None),
                       ("gelu", None), ("gelu_tanh", None)]:  # fmt: skip
        for count in (z.size, 1, 7, 9):
            dz = np.full(count, 7.0)
            assert _core._vector_math_isa_test(
                isa, dz, z[:count], activation=act, alpha=alpha, dy=dy[:count]
            ), (isa, act)
            with np.errstate(over="ignore", invalid="ignore"):
                d, scale = float64_derivative(act, z[:count], alpha or 1.0)
                truth = dy[:count] * d
                scale = scale * (1 + z[:count] ** 2 / 2) if act == "gelu" else scale
                bound = 16 * 2.0**-53 * np.abs(dy[:count]) * scale + 1e-300
                same = (dz == truth) | (np.isnan(dz) & np.isnan(truth))
                bad = ~((np.abs(dz - truth) <= bound) | same)
            assert not bad.any(), (isa, act, z[:count][bad][:4], dz[bad][:4], truth[bad][:4])
            made = (np.abs(dz) < tiny) & (dz != 0) & (np.abs(truth) >= 2 * tiny)
            assert not made.any(), (isa, act, z[:count][made][:4])
    for cols in (1, 7, 8, 9, 1000):
        z2 = rng.standard_normal((5, cols)) * rng.choice([0.1, 3, 30, 1000], (5, 1))
        out = np.full_like(z2, 7.0)
        assert _core._vector_math_isa_test(isa, out, z2, activation="softmax")
        e = np.exp(z2 - z2.max(axis=1, keepdims=True))
        truth = e / e.sum(axis=1, keepdims=True)
        err = np.abs(out - truth)
        assert np.all(err <= 32 * 2.0**-53 * (truth + 1 / cols) + 2 * tiny), (isa, cols)
        assert not ((np.abs(out) < tiny) & (out != 0)).any(), (isa, cols)


@pytest.mark.parametrize("isa", ISAS)
def test_vector_softmax_matches_float64(isa):
    """Row softmax by the ISA's vector math (activation_forward's float32 path): within a few
    roundings of float64 at every row length (masked tails), 0 where exp(z - max) is below
    float32's normal range, and a row with NaN or +inf is NaN; the portable ISA has none."""
    rng = np.random.default_rng(4)
    for cols in (1, 2, 10, 15, 16, 17, 33, 1000):
        z = (rng.standard_normal((7, cols)) * rng.choice([0.1, 3, 30, 100], (7, 1))).astype(
            np.float32
        )
        if cols > 2:
            z[1, 1] = -np.inf
            z[2, cols // 2] = np.nan
            z[3, -1] = np.inf
        out = np.full_like(z, 7.0)
        done = _core._vector_math_isa_test(isa, out, z, activation="softmax")
        assert done == (isa != "portable"), isa
        if not done:
            assert np.all(out == 7.0)
            continue
        z64 = z.astype(np.float64)
        with np.errstate(invalid="ignore"):
            e = np.exp(z64 - z64.max(axis=1, keepdims=True))
            truth = e / e.sum(axis=1, keepdims=True)
        bad_rows = ~np.isfinite(z).all(axis=1) & (np.isnan(z) | (z == np.inf)).any(axis=1)
        assert np.all(np.isnan(out[bad_rows])), (isa, cols)
        good = ~bad_rows
        tiny = np.finfo(np.float32).tiny
        err = np.abs(out[good] - truth[good])
        assert np.all(err <= 8 * 2.0**-24 * (truth[good] + 1 / cols) * 4 + tiny), (isa, cols)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["softmax", "log_softmax"])
def test_narrow_rows_in_blocks_are_the_row_by_row_bits(isa, dtype, activation):
    """Rows of at most two vectors' width run a vector's width of rows at once, transposed
    (vector_math.inc's narrow_rows_exp); a lone row runs by itself. Both give the same bits,
    with NaN (whose sign and payload may differ), infinities, signed zeros, ties for the max
    and exps below the normal range."""
    rng = np.random.default_rng(11)
    for cols in range(1, 34):
        z = rng.standard_normal((37, cols)) * rng.choice([0.1, 3, 30, 300], (37, 1))
        z = z.astype(dtype)
        z[1, 0] = -np.inf
        z[2, cols // 2] = np.nan
        z[3, -1] = np.inf
        z[4, :] = -np.inf
        z[5, :] = 0.0
        z[6, ::2] = -0.0
        z[7, :] = 5.0
        z[8, 0] = -200
        out = np.full_like(z, 7.0)
        if not _core._vector_math_isa_test(isa, out, z, activation=activation):
            assert isa == "portable"
            return
        for i in range(z.shape[0]):
            row = np.full_like(z[i : i + 1], 7.0)
            assert _core._vector_math_isa_test(isa, row, z[i : i + 1], activation=activation)
            got = out[i : i + 1]
            same = (got.view(f"u{z.itemsize}") == row.view(f"u{z.itemsize}")) | (
                np.isnan(got) & np.isnan(row)
            )
            assert same.all(), (cols, i, got, row)


def test_hook_rejects_bad_isa():
    a = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="isa"):
        _core._gemm_isa_test("sse9", a, a, a.copy())


def test_fma_peak_probe_counts_its_work():
    """The benchmarks' peak probe: 12 chains of multiply-adds per step, 2 flops per lane, the
    same count on any thread count; its arguments checked like every kernel's."""
    lanes = {"avx512": 64, "avx2": 32}  # bytes per vector
    isa = densekit.cpu_info()["isa"]
    for dtype, size in (("float32", 4), ("float64", 8)):
        counts = {_core._fma_peak(dtype, 1000, num_threads=t) for t in (1, 2, 3)}
        assert len(counts) == 1
        per_step = counts.pop() / (2 * 12 * 1000)
        if isa[dtype] in lanes:
            assert per_step == lanes[isa[dtype]] // size
        else:
            assert per_step in (1, 2, 4, 8)
    with pytest.raises(ValueError, match="dtype"):
        _core._fma_peak("float16", 10)
    with pytest.raises(ValueError, match="steps"):
        _core._fma_peak("float32", 0)
    with pytest.raises(ValueError, match="steps"):
        _core._fma_peak("float32", 2**70)
    with pytest.raises(TypeError, match="steps"):
        _core._fma_peak("float32", 1.5)
    with pytest.raises(ValueError, match="num_threads"):
        _core._fma_peak("float32", 10, num_threads=0)


def test_cpu_info_reports_choice():
    info = densekit.cpu_info()
    assert info["isa"]["float32"] in ISAS
    assert info["available_isas"] == ISAS
    assert info["best_isa"] == ISAS[0]
    assert info["microkernels"]["float32"].startswith(info["isa"]["float32"])
    assert info["microkernels"]["float64"].startswith(info["isa"]["float64"])
    assert isinstance(info["features"], dict) and "avx2" in info["features"]
    assert isinstance(info["forced"], bool)


def proc_cpuinfo_flags():
    """The CPU flags Linux reports (None elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def test_low_precision_features_agree_with_the_paths_and_the_os():
    """The features behind the bf16 / int8 paths are reported, agree with the path chosen and
    with the flags Linux lists (the same CPUID bits)."""
    features = densekit.cpu_info()["features"]
    for name in ("avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"):
        assert isinstance(features[name], bool)
    bf16, int8 = K.bf16_config(), K.int8_config()
    assert ("avx512_bf16" in bf16["available"]) == (
        features["avx512_bf16"] and features["avx512bw"] and "avx512" in ISAS
    )
    assert ("avx512_vnni" in int8["available"]) == (
        features["avx512_vnni"] and features["avx512bw"] and "avx512" in ISAS
    )
    if "amx" in bf16["available"]:
        assert features["amx_bf16"]
    if "amx" in int8["available"]:
        assert features["amx_int8"]
    flags = proc_cpuinfo_flags()
    if flags is not None and "avx512" in ISAS:
        for name in ("avx512_bf16", "avx512_vnni"):
            assert features[name] == (name in flags), name
        if features["amx_tile"]:
            assert "amx_tile" in flags


def test_show_config_prints_and_returns_the_choices(capsys):
    report = densekit.show_config(mode="dicts")
    info = densekit.cpu_info()
    assert set(report) == {"build", "machine", "paths", "amx_note", "environment"}
    assert report["build"]["version"] == densekit.__version__
    assert report["machine"]["usable_cpus"] == _core.hardware_threads()
    assert report["machine"]["threads"] == densekit.get_num_threads()
    assert set(report["machine"]["features"]) == {k for k, v in info["features"].items() if v}
    assert {dtype: p["path"] for dtype, p in report["paths"].items()} == info["isa"]
    assert report["paths"]["float32"]["kernel"] == info["microkernels"]["float32"]
    assert report["paths"]["bfloat16"]["available"] == K.bf16_config()["available"]
    assert report["paths"]["int8"]["best"] == K.int8_config()["best"]
    assert densekit.show_config() is None
    out = capsys.readouterr().out
    assert out.startswith(f"densekit {densekit.__version__} ")
    for dtype, path in info["isa"].items():
        assert any(line.split()[:2] == [dtype, path] for line in out.splitlines()), (dtype, out)
    with pytest.raises(ValueError, match="mode: expected 'stdout' or 'dicts', got 'json'"):
        densekit.show_config("json")


SHOW_CONFIG_SCRIPT = "import json, densekit; print(json.dumps(densekit.show_config('dicts')))"


def test_show_config_reports_forced_paths_and_the_environment():
    report = run_with_isa(
        None,
        SHOW_CONFIG_SCRIPT,
        DENSEKIT_BF16="emulated",
        DENSEKIT_INT8="sse9",
        OMP_NUM_THREADS="1",
    )
    bf16, int8 = report["paths"]["bfloat16"], report["paths"]["int8"]
    assert bf16["path"] == "emulated" and bf16["forced"] and bf16["requested"] == "emulated"
    assert not int8["forced"] and int8["path"] == int8["best"] and "sse9" in int8["note"]
    assert report["machine"]["usable_cpus"] == report["machine"]["threads"] == 1
    assert report["environment"]["DENSEKIT_BF16"] == "emulated"
    assert report["environment"]["OMP_NUM_THREADS"] == "1"


# ---- dense kernels per ISA, in a subprocess that forces the ISA ----------------------


def derivative_reference(name, z):
    """float64 f'(z) of an elementwise activation (default alpha)."""
    if name == "linear":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, 0.01)
    if name == "elu":
        return np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))
    if name == "sigmoid":
        s = act_reference("sigmoid", z)
        return s * (1 - s)
    if name == "softplus":
        return act_reference("sigmoid", z)
    if name == "tanh":
        return 1 - np.tanh(z) ** 2
    if name == "gelu":
        erf = np.vectorize(math.erf, otypes=[np.float64])
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return 0.5 * (1 + erf(z / math.sqrt(2))) + z * pdf
    if name == "gelu_tanh":
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (z + 0.044715 * z**3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)
    if name == "silu":
        s = act_reference("sigmoid", z)
        return s * (1 + z * (1 - s))
    if name == "selu":
        return np.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0)))
    if name == "relu6":
        return ((z > 0) & (z < 6)).astype(np.float64)
    if name == "hard_sigmoid":
        return ((z > -3) & (z < 3)) / 6.0
    if name == "softsign":
        return 1 / (1 + np.abs(z)) ** 2
    if name == "mish":
        t = np.tanh(np.logaddexp(0, z))
        return t + z * act_reference("sigmoid", z) * (1 - t * t)
    if name == "exponential":
        return np.exp(z)
    raise AssertionError(name)


def dense_failures():
    """dense_forward / dense_backward on the ISA in use, for every activation: bitwise the
    same for 1, 2, 3 and 7 threads, and within tolerance of the float64 reference (the
    derivative is taken at densekit's own pre-activation, so only roundings differ)."""
    failures = []
    rng = np.random.default_rng(1)
    for dtype in DTYPES:
        for n, k, m in [(1, 784, 40), (5, 33, 17), (37, 65, 129), (130, 300, 70)]:
            x = rng.standard_normal((n, k)).astype(dtype)
            w = (rng.standard_normal((k, m)) / math.sqrt(k)).astype(dtype)
            b = rng.standard_normal(m).astype(dtype)
            dy = rng.standard_normal((n, m)).astype(dtype)
            for act in K.ACTIVATIONS:
                where = f"{dtype.__name__} {(n, k, m)} {act}"
                z = np.empty((n, m), dtype)
                runs = []
                for threads in (1, 2, 3, 7):
                    y = K.dense_forward(x, w, b, act, preact_out=z, num_threads=threads)
                    dx, dw, db = K.dense_backward(
                        dy, x, w, y=y, preact=z, activation=act, num_threads=threads
                    )
                    dw2, db2 = dw.copy(), db.copy()
                    K.dense_backward(
                        dy,
                        x,
                        w,
                        y=y,
                        preact=z,
                        activation=act,
                        need_dx=False,
                        dw_out=dw2,
                        db_out=db2,
                        accumulate=True,
                        num_threads=threads,
                    )
                    runs.append([v.tobytes() for v in (y, z, dx, dw, db, dw2, db2)])
                if any(r != runs[0] for r in runs):
                    failures.append(f"{where}: bits differ across thread counts")
                x64, w64, z64 = (v.astype(np.float64) for v in (x, w, z))
                z_ref = x64 @ w64 + b
                scale = np.abs(x64) @ np.abs(w64) + np.abs(b)
                if not np.all(np.abs(z64 - z_ref) <= tolerance(dtype, k, scale, z_ref)):
                    failures.append(f"{where}: preact")
                # dz's own rounding (derivative, softmax row product) is relative to the size
                # of its terms, not of dz: dz_scale is that size.
                gain = 1.0
                if act == "softmax":
                    e = np.exp(z64 - z64.max(1, keepdims=True))
                    y_ref = e / e.sum(1, keepdims=True)
                    dz = y_ref * (dy - (dy * y_ref).sum(1, keepdims=True))
                    dz_scale = y_ref * (np.abs(dy) + (np.abs(dy) * y_ref).sum(1, keepdims=True))
                elif act == "log_softmax":
                    shifted = z64 - z64.max(1, keepdims=True)
                    log_sum = np.log(np.exp(shifted).sum(1, keepdims=True))
                    y_ref = shifted - log_sum
                    p = np.exp(y_ref)
                    dz = dy - p * dy.sum(1, keepdims=True)
                    dz_scale = np.abs(dy) + p * np.abs(dy).sum(1, keepdims=True)
                    # its rounding is relative to |z - max| + log(sum) + 1, not to y
                    scale = scale + np.abs(shifted) + np.abs(log_sum) + 1
                else:
                    y_ref = act_reference(act, z64)
                    slope = derivative_reference(act, z64)
                    dz = dy * slope
                    dz_scale = np.abs(dy) * (np.abs(slope) + 1)
                    gain = np.maximum(1.0, np.abs(slope))
                if not np.all(np.abs(y - y_ref) <= 4 * tolerance(dtype, k, scale * gain, y_ref)):
                    failures.append(f"{where}: y")
                checks = [
                    ("dx", dx, dz @ w64.T, dz_scale @ np.abs(w64.T), m),
                    ("dw", dw, x64.T @ dz, np.abs(x64.T) @ dz_scale, n),
                    ("db", db, dz.sum(0), dz_scale.sum(0), n),
                    ("dw acc", dw2, 2 * (x64.T @ dz), 2 * (np.abs(x64.T) @ dz_scale), n),
                    ("db acc", db2, 2 * dz.sum(0), 2 * dz_scale.sum(0), n),
                ]
                for label, got, want, size, depth in checks:
                    err = np.abs(got - want)
                    if not np.all(err <= 8 * tolerance(dtype, depth, size, want)):
                        failures.append(f"{where}: {label} max error {err.max():.3g}")
    return failures


DENSE_SCRIPT = (
    "import json, sys; sys.path.insert(0, sys.argv[1]); import densekit, test_gemm_isa; "
    "print(json.dumps({'isa': densekit.cpu_info()['isa']['float32'], "
    "'forced': densekit.cpu_info()['forced'], 'failures': test_gemm_isa.dense_failures()}))"
)


def run_with_isa(isa_env, script, *args, **environment):
    """The JSON the script prints last, run in a child with DENSEKIT_ISA=isa_env (unset when
    None) and the other environment variables given."""
    env = dict(os.environ, **environment)
    if isa_env is None:
        env.pop("DENSEKIT_ISA", None)
    else:
        env["DENSEKIT_ISA"] = isa_env
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("isa", ISAS)
def test_dense_forward_backward_per_isa(isa):
    result = run_with_isa(isa, DENSE_SCRIPT, os.path.dirname(__file__))
    assert result["isa"] == isa
    assert result["forced"]
    assert result["failures"] == []


INFO_SCRIPT = "import json, densekit; print(json.dumps(densekit.cpu_info()))"


def test_environment_lowers_isa_and_reports_fallbacks():
    for isa in ISAS:
        info = run_with_isa(isa, INFO_SCRIPT)
        assert {k: info["isa"][k] for k in ("float32", "float64")} == {
            "float32": isa,
            "float64": isa,
        }
        if isa != "avx512":  # the low-precision instructions need AVX-512: emulated below it
            assert info["isa"]["bfloat16"] == info["isa"]["int8"] == "emulated"
        assert info["forced"] and info["note"] == ""
        assert info["requested"] == isa
    bogus = run_with_isa("sse9", INFO_SCRIPT)
    assert not bogus["forced"] and bogus["isa"]["float32"] == ISAS[0]
    assert "sse9" in bogus["note"]
    unset = run_with_isa(None, INFO_SCRIPT)
    assert not unset["forced"] and unset["requested"] is None
    assert unset["isa"]["float32"] == ISAS[0]
    for higher in ("avx512", "avx2"):
        if higher not in ISAS:
            info = run_with_isa(higher, INFO_SCRIPT)
            assert not info["forced"] and info["isa"]["float32"] == ISAS[0]
            assert "not supported" in info["note"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_nan_like_torch(isa, dtype):
    """A NaN pre-activation stays NaN through relu (torch.relu keeps it), in the fused epilogue
    of every ISA and in activation_forward; negatives and -0 give +0."""
    bias = np.array([np.nan, -1.0, -0.0, 0.0, 2.0, np.inf, -np.inf, np.nan], dtype)
    x = np.repeat(bias[None, :], 3, axis=0)
    expected = np.array([np.nan, 0.0, 0.0, 0.0, 2.0, np.inf, 0.0, np.nan], dtype)
    y = np.empty_like(x)
    # z = 0 @ 0 + bias: the values reach the epilogue through the bias, exactly.
    zeros = np.zeros((3, 4), dtype)
    _core._gemm_isa_test(isa, zeros, np.zeros((4, 8), dtype), y, bias=bias, activation="relu")
    for result in (y, K.activation_forward(x, "relu")):
        np.testing.assert_array_equal(result, np.broadcast_to(expected, x.shape))
        assert not np.signbit(result[:, 1:4]).any()


# The naive triple loop (gemm_reference) beside the fast paths, llm.c-style. The portable
# family rounds each product and each sum like the loop, in the same order, so it gives the
# loop's bits wherever it is one multiply-add chain per element started from 0: no
# accumulate, and not the dot-product path (transposed B with m <= 4, which sums in lanes).
REFERENCE_SHAPES = [(1, 1, 1), (3, 17, 5), (5, 33, 70), (13, 130, 7), (37, 61, 300), (64, 97, 515)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("activation", ["linear", "relu", "leaky_relu", "tanh", "gelu"])
@pytest.mark.parametrize(("m", "n", "k"), REFERENCE_SHAPES)
def test_fast_paths_match_the_reference_loop(dtype, trans_b, activation, m, n, k):
    epilogue = {"bias": True, "preact": True, "activation": activation}
    _, _, _, _, expected, expected_preact = run_gemm_case(
        "reference", dtype, False, trans_b, epilogue, m, n, k
    )
    for isa in ISAS:
        _, _, _, _, c, preact = run_gemm_case(isa, dtype, False, trans_b, epilogue, m, n, k)
        if isa == "portable" and not (trans_b and m <= 4):
            assert c.tobytes() == expected.tobytes(), isa
            assert preact.tobytes() == expected_preact.tobytes(), isa
        else:
            tolerance = 64 * np.finfo(dtype).eps * math.sqrt(k + 2)
            np.testing.assert_allclose(preact, expected_preact, rtol=tolerance, atol=tolerance)
            np.testing.assert_allclose(c, expected, rtol=tolerance, atol=tolerance)


KERAS_VECTOR = ("silu", "selu", "relu6", "hard_sigmoid", "softsign", "mish", "exponential")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("isa", ISAS)
def test_keras_activations_fused_equal_alone_and_near_scalar(isa, dtype):
    """Keras's further activations in the product's epilogue (z = x @ I exactly) give the bits
    of activation_forward's vector path at every length (masked tails), stay within 8 ulp of
    scalar::forward (the portable epilogue; relu6 and hard_sigmoid bit for bit) where the
    result is normal, and make no subnormal from a normal input; the vector derivative is
    within 8 roundings of scalar::derivative_from_z's terms. The portable ISA has none."""
    rng = np.random.default_rng(21)
    top = 95.0 if dtype == np.float32 else 720.0
    parts = [rng.standard_normal(2000) * s for s in (0.01, 1.0, 3.0, 10.0, 40.0)]
    specials = [0.0, -0.0, 3.0, -3.0, 6.0, 20.0, 40.0, 88.5, -88.5, 709.5, 1e30, -1e30]
    values = np.concatenate([*parts, np.linspace(-top, top, 4001), specials]).astype(dtype)
    lanes = 16
    x = np.resize(values, (len(values) + lanes - 1) // lanes * lanes).reshape(-1, lanes)
    eye = np.eye(lanes, dtype=dtype)
    finfo = np.finfo(dtype)
    for act in KERAS_VECTOR:
        y = np.empty_like(x)
        _core._gemm_isa_test(isa, x, eye, y, activation=act)
        scalar = np.empty_like(x)
        _core._gemm_isa_test("portable", x, eye, scalar, activation=act)
        z = (x + dtype(0)).ravel()
        for count in (x.size, 1, 7, 17):
            alone = np.full(count, 7.0, dtype)
            done = _core._vector_math_isa_test(isa, alone, z[:count], activation=act)
            assert done == (isa != "portable"), (isa, act)
            if done:
                assert alone.tobytes() == y.ravel()[:count].tobytes(), (isa, act, count)
        if isa == "portable":
            continue
        made = (np.abs(y) < finfo.tiny) & (y != 0) & ((np.abs(x) >= finfo.tiny) | (x == 0))
        assert not made.any(), (isa, act, x[made][:4])
        if act in ("relu6", "hard_sigmoid"):
            assert y.tobytes() == scalar.tobytes(), (isa, act)
            continue
        normal = np.abs(scalar) >= finfo.tiny
        if act in ("silu", "mish"):  # 0 where the vector exp flushes exp(z) (|y| < 1e-36)
            normal &= ~((y == 0) & (x < np.log(finfo.tiny)))
        with np.errstate(invalid="ignore"):
            err = np.abs(y.astype(np.float64) - scalar)
            ok = (err <= 8 * np.spacing(np.abs(scalar)).astype(np.float64)) | (y == scalar)
        assert (ok | ~normal).all(), (isa, act, x[~ok & normal][:4], y[~ok & normal][:4])
        dy = rng.uniform(0.5, 2.0, z.size).astype(dtype)
        dz = np.empty_like(z)
        assert _core._vector_math_isa_test(isa, dz, z, activation=act, dy=dy)
        with np.errstate(over="ignore", invalid="ignore"):
            truth = dy * derivative_reference(act, z.astype(np.float64))
            size = np.abs(dy) * (np.abs(derivative_reference(act, z.astype(np.float64))) + 1)
            bound = 8 * finfo.eps * size * (1 + np.abs(z) * (act in ("silu", "mish")))
            good = (np.abs(dz - truth) <= bound + finfo.tiny * 4 * (1 + np.abs(z))) | (dz == truth)
        with np.errstate(over="ignore"):  # f'(z) = exp(z) overflows before dy exp(z)
            beyond = np.maximum(np.abs(truth), np.exp(z.astype(np.float64))) > float(finfo.max)
        good |= np.isinf(dz) & beyond
        assert good.all(), (isa, act, z[~good][:4], dz[~good][:4], truth[~good][:4])


@pytest.mark.parametrize("isa", ISAS)
def test_vector_log_softmax_matches_float64(isa):
    """Row log-softmax by the ISA's vector math, both dtypes, every row length (masked
    tails): within a few roundings of |z - max| + log(sum) + 1; a row with NaN or +inf is NaN,
    -inf entries stay -inf; the portable ISA has none."""
    rng = np.random.default_rng(8)
    for dtype in DTYPES:
        for cols in (1, 2, 10, 15, 16, 17, 33, 1000):
            z = (rng.standard_normal((7, cols)) * rng.choice([0.1, 3, 30, 100], (7, 1))).astype(
                dtype
            )
            if cols > 2:
                z[1, 1] = -np.inf
                z[2, cols // 2] = np.nan
                z[3, -1] = np.inf
            out = np.full_like(z, 7.0)
            done = _core._vector_math_isa_test(isa, out, z, activation="log_softmax")
            assert done == (isa != "portable"), isa
            if not done:
                assert np.all(out == 7.0)
                continue
            z64 = z.astype(np.float64)
            with np.errstate(invalid="ignore"):
                shifted = z64 - z64.max(axis=1, keepdims=True)
                log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
                truth = shifted - log_sum
                err = np.abs(out - truth)
            bad_rows = np.isnan(z).any(axis=1) | (z == np.inf).any(axis=1)
            assert np.all(np.isnan(out[bad_rows])), (isa, cols)
            finite = ~bad_rows[:, None] & np.isfinite(z)
            assert np.all(out[~bad_rows[:, None] & (z == -np.inf)] == -np.inf)
            size = np.abs(shifted) + np.abs(log_sum) + 1
            assert np.all(err[finite] <= (4 * np.finfo(dtype).eps * size)[finite]), (isa, cols)


def test_reference_loop_rejects_softmax():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="activation"):
        _core._gemm_isa_test(
            "reference", a, a.T.copy(), np.zeros((2, 2), np.float32), activation="softmax"
        )
    with pytest.raises(ValueError, match="log_softmax is a row operation"):
        _core._gemm_isa_test(
            "reference", a, a.T.copy(), np.zeros((2, 2), np.float32), activation="log_softmax"
        )


def import_with_tuning(value):
    env = dict(os.environ, DENSEKIT_GEMM_TUNE=value)
    code = (
        "import densekit, numpy as np; "
        "print(densekit.kernels.dense_forward(np.ones((2, 3)), np.ones((3, 4))).sum())"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("kc=384,bogus=1", "unknown key 'bogus'"),
        ("kc=abc", "key 'kc' has value 'abc', expected a number"),
        ("kc=", "key 'kc' has value '', expected a number"),
        ("packb", "item 'packb' is not key=value"),
    ],
)
def test_gemm_tune_rejects_unknown_keys_and_junk(value, message):
    result = import_with_tuning(value)
    assert result.returncode != 0
    assert "DENSEKIT_GEMM_TUNE" in result.stderr
    assert message in result.stderr
    assert (
        "known keys: kc, nc, grain, packb, packa, swap, tasks, align, columns, even"
        in result.stderr
    )


def test_gemm_tune_accepts_known_keys():
    result = import_with_tuning("kc=128,nc=512,packb=1,swap=0,")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == 24.0


def _positive_bits(y):
    """y's bits are those of a positive number or +inf (NaN and zeros are not)."""
    ints = np.int32 if y.dtype == np.float32 else np.int64
    inf_bits = np.array(np.inf, y.dtype).view(ints)
    bits = y.view(ints)
    return (bits > 0) & (bits <= inf_bits)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_positive_slopes_match_the_scalar_rule(isa, dtype):
    """dz = dy * (y > 0 ? 1 : slope) with y > 0 on y's bits: the same bits as the scalar loop,
    subnormals, zeros, NaN and infinities included, at every tail length."""
    rng = np.random.default_rng(5)
    info = np.finfo(dtype)
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, info.tiny, -info.tiny,
                info.tiny / 8, -info.tiny / 8, info.max, -info.max, 1.0, -1.0]  # fmt: skip
    y = np.concatenate([rng.standard_normal(1000), specials]).astype(dtype)
    dy = np.concatenate([rng.standard_normal(1000), specials[::-1]]).astype(dtype)
    for slope in (0.0, 0.01, -2.5):
        for count in (y.size, 0, 1, 7, 15, 16, 17, 33):
            dz = _core._positive_slopes_isa_test(isa, dy[:count], y[:count], slope)
            if isa == "portable":
                assert dz is None
                continue
            with np.errstate(invalid="ignore", over="ignore"):  # inf * 0, max * -2.5
                truth = dy[:count] * np.where(_positive_bits(y[:count]), dtype(1), dtype(slope))
            assert dz.tobytes() == truth.tobytes(), (isa, slope, count)


def _relu_by_operations(z, cap, slope, threshold):
    """The ReLU layer's function as its operations in z's dtype, each rounded (NumPy's scalar
    arithmetic in float32 rounds per operation, as C++'s does): the bits every ISA must give."""
    t = z.dtype.type
    cap, slope, threshold = t(cap), t(slope), t(threshold)
    with np.errstate(invalid="ignore", over="ignore"):
        above = np.where(z < cap, z, cap)
        below = t(0) - slope * (threshold - z) if slope != 0 else np.zeros_like(z)
        rest = np.where(z == z, t(0), z)  # NaN kept, with its bits
        return np.where(z > threshold, above, np.where(z < threshold, below, rest))


def _relu_derivative_by_operations(z, cap, slope, threshold):
    """The ReLU layer's derivative in z's dtype: 1 above the threshold up to the cap, the
    slope below it, 0 at it, above the cap and at NaN."""
    t = z.dtype.type
    cap, slope, threshold = t(cap), t(slope), t(threshold)
    with np.errstate(invalid="ignore"):
        inside = np.where(z <= cap, t(1), t(0))
        return np.where(z > threshold, inside, np.where(z < threshold, slope, t(0)))


# (cap, slope, threshold): no cap, relu6, leaky, all three, a cap below the threshold, a zero
# cap, a negative threshold
RELU_FORMS = [
    (np.inf, 0.0, 0.0), (6.0, 0.0, 0.0), (np.inf, 0.1, 0.0), (2.0, 1.7, 0.5),
    (1.0, 0.0, 3.0), (0.0, 0.3, -1.0), (np.inf, 0.2, -0.5),
]  # fmt: skip


def _relu_points(rng, dtype, cap, threshold):
    """Normal values, shuffled with NaN of either sign, infinities, zeros, subnormals, the
    extremes, and 0, 1, -1, the cap and the threshold with their neighbours."""
    info = np.finfo(dtype)
    specials = [np.nan, -np.nan, np.inf, -np.inf, -0.0, info.smallest_subnormal,
                -info.smallest_subnormal, info.max, -info.max]  # fmt: skip
    for p in [0.0, cap, threshold, 1.0, -1.0]:
        specials += [p, np.nextafter(dtype(p), dtype(np.inf))]
        specials += [np.nextafter(dtype(p), dtype(-np.inf))]
    z = np.concatenate([rng.standard_normal(1000) * 3, specials * 3]).astype(dtype)
    rng.shuffle(z)
    return z


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_relu_gives_the_bits_of_its_operations(isa, dtype):
    """relu_forward's vector loop (a ReLU layer with a cap, a slope or a threshold): the bits
    of the function's rounded operations, at the threshold and the cap and their neighbours,
    NaN of either sign, infinities, zeros and subnormals, at every tail length."""
    rng = np.random.default_rng(8)
    for cap, slope, threshold in RELU_FORMS:
        z = _relu_points(rng, dtype, cap, threshold)
        for count in (z.size, 0, 1, 7, 15, 16, 17, 33):
            y = _core._relu_isa_test(isa, z[:count], cap, slope, threshold)
            if isa == "portable":
                assert y is None
                continue
            truth = _relu_by_operations(z[:count], cap, slope, threshold)
            assert y.tobytes() == truth.tobytes(), (isa, cap, slope, threshold, count)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_relu_backward_gives_the_bits_of_its_operations(isa, dtype):
    """relu_backward's vector loop: dy times the derivative's 1, slope or 0, at the same
    awkward points as the forward's, dy holding infinities and NaN too (inf * 0 is NaN)."""
    rng = np.random.default_rng(9)
    for cap, slope, threshold in RELU_FORMS:
        z = _relu_points(rng, dtype, cap, threshold)
        dy = np.concatenate([rng.standard_normal(z.size - 3), [np.inf, -np.inf, np.nan]])
        dy = rng.permutation(dy).astype(dtype)
        for count in (z.size, 0, 1, 7, 15, 16, 17, 33):
            dz = _core._relu_isa_test(isa, z[:count], cap, slope, threshold, dy=dy[:count])
            if isa == "portable":
                assert dz is None
                continue
            derivative = _relu_derivative_by_operations(z[:count], cap, slope, threshold)
            with np.errstate(invalid="ignore"):  # inf * 0
                truth = dy[:count] * derivative
            assert dz.tobytes() == truth.tobytes(), (isa, cap, slope, threshold, count)
    assert relu_kernel_failures(dtype) == []  # the kernels on the ISA in use


def relu_kernel_failures(dtype=np.float32):
    """relu_forward and relu_backward on the ISA in use against the operations' bits: the
    vector-math loops, or under DENSEKIT_ISA=portable the kernels' fallback loops."""
    rng = np.random.default_rng(10)
    failures = []
    for cap, slope, threshold in RELU_FORMS:
        if threshold < 0:  # the kernels take Keras's parameters, each >= 0
            continue
        z = _relu_points(rng, dtype, cap, threshold)
        dy = rng.standard_normal(z.size).astype(dtype)
        parameters = {"max_value": None if cap == np.inf else cap, "negative_slope": slope,
                      "threshold": threshold}  # fmt: skip
        y = K.relu_forward(z, **parameters)
        if y.tobytes() != _relu_by_operations(z, cap, slope, threshold).tobytes():
            failures.append(f"forward {parameters}")
        dz = K.relu_backward(dy, z, **parameters)
        derivative = _relu_derivative_by_operations(z, cap, slope, threshold)
        if dz.tobytes() != (dy * derivative).tobytes():
            failures.append(f"backward {parameters}")
    return failures


def test_relu_fallback_loops_give_the_same_bits():
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import densekit, test_gemm_isa; "
        "print(json.dumps({'failures': test_gemm_isa.relu_kernel_failures()}))"
    )
    assert run_with_isa("portable", script, os.path.dirname(__file__))["failures"] == []


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (256, 10), (97, 64), (5, 0), (0, 9)])
def test_vector_column_sums_are_the_row_order_chain(isa, dtype, shape):
    """Each column's float64 sum over the rows in order, as the scalar loop adds them: the
    values span many magnitudes, so another order would round differently."""
    rng = np.random.default_rng(6)
    rows = (rng.standard_normal(shape) * 10.0 ** rng.integers(-20, 20, shape)).astype(dtype)
    sums = _core._column_sums_isa_test(isa, rows)
    if isa == "portable":
        assert sums is None
        return
    truth = np.zeros(shape[1])
    for row in rows:
        truth += row.astype(np.float64)
    assert sums.tobytes() == truth.tobytes()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_softmax_backward_matches_float64(isa, dtype):
    """softmax's and log_softmax's backward by the ISA's vector math (from their outputs) over
    row lengths around every vector width (masked tails, the four-vector blocks) stay within a
    few units of the row's scale of the float64 formulas; a row's bits do not depend on the
    rows around it, and dz may be dy itself. The portable ISA has none."""
    rng = np.random.default_rng(13)
    eps = np.finfo(dtype).eps
    for cols in (1, 2, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 129, 1000):
        z = rng.standard_normal((6, cols)) * rng.choice([0.1, 3.0, 30.0], (6, 1))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        dy = rng.standard_normal((6, cols))
        for act, out_of_z, truth in [
            ("softmax", p, p * (dy - (dy * p).sum(axis=1, keepdims=True))),
            ("log_softmax", np.log(p), dy - p * dy.sum(axis=1, keepdims=True)),
        ]:
            y, g = out_of_z.astype(dtype), dy.astype(dtype)
            dz = np.full_like(g, 7.0)
            done = _core._vector_math_isa_test(isa, dz, y, activation=act, dy=g)
            if isa == "portable":
                assert not done and np.all(dz == 7.0)
                continue
            assert done, (isa, act)
            scale = np.abs(dy).sum(axis=1, keepdims=True) + np.abs(dy)
            np.testing.assert_array_less(np.abs(dz - truth), 8 * eps * scale + 1e-300)
            alone = np.empty_like(g[:1])
            assert _core._vector_math_isa_test(isa, alone, y[3:4], activation=act, dy=g[3:4])
            np.testing.assert_array_equal(alone, dz[3:4])
    # log_softmax's backward given y above 88 in some row (no log-softmax output): exp(y) as
    # the exponential activation's, overflowing to inf as float64's does
    if isa != "portable":
        y = np.array([[-1.0, 89.0, 0.5], [-3.0, -2.0, -1.0], [2.0, np.nan, -np.inf]], dtype)
        g = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.5, 0.0, 1.0]], dtype)
        dz = np.empty_like(g)
        assert _core._vector_math_isa_test(isa, dz, y, activation="log_softmax", dy=g)
        with np.errstate(over="ignore", invalid="ignore"):
            truth = g - np.exp(y.astype(np.float64)) * g.sum(axis=1, keepdims=True)
            truth = truth.astype(dtype)
        np.testing.assert_allclose(dz, truth, rtol=8 * eps, atol=0)
