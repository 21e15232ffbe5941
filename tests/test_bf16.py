"""bfloat16 kernels: conversions and the bf16 matrix product, on every path this CPU runs.

The product's rule (csrc/lowp/bf16_gemm.hpp) is vdpbf16ps's: per k pair, acc += a_odd b_odd,
then acc += a_even b_even, each rounded to float32 (a bf16 product is exact in float32), with
subnormals read and written as zero. ``pair_rule`` below is that rule in NumPy float32
arithmetic, so the emulated and avx512_bf16 paths must equal it bit for bit on data without
subnormals. The amx path follows tdpbf16ps's rule (``amx_rule``: steps of 16 pairs, two
chains per step, then acc += even + odd), bit for bit. Every path is within the float32
accumulation bound of the float64 product of the bf16 values.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densekit import _core
from densekit import kernels as K

from .helpers import at_offset, json_of_child

BF16 = ml_dtypes.bfloat16
PATHS = list(_core.bf16_config()["available"])
# The environment that makes the default product follow vdpbf16ps's rule (amx has its own).
PAIR_RULE_DEFAULT = {"DENSEKIT_BF16": "avx512_bf16"} if PATHS[0] == "amx" else {}
ELEMENTWISE = [name for name in K.ACTIVATIONS if K.ACTIVATION_INFO[name]["elementwise"]]
SHAPES = [
    (0, 5, 3),
    (4, 0, 3),
    (3, 5, 0),
    (1, 1, 1),
    (1, 7, 13),
    (2, 33, 17),
    (3, 97, 31),
    (4, 65, 32),
    (5, 17, 7),
    (13, 31, 33),
    (14, 64, 257),
    (15, 129, 65),
    (29, 300, 97),
    (31, 1, 2),
]


def bf16(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(BF16)


def bits(x):
    return np.ascontiguousarray(x).view(np.uint32 if x.dtype == np.float32 else np.uint16)


def _widened(a, b):
    """op(A) and B widened to float32, and a zero float32 C."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    return a32, b32, np.zeros((a32.shape[0], b32.shape[1]), np.float32)


def pair_rule(a, b):
    """op(A) @ B by vdpbf16ps's rule in float32 NumPy arithmetic (no subnormals in the data)."""
    a32, b32, acc = _widened(a, b)
    k = a32.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        for q in range(0, k, 2):
            if q + 1 < k:
                acc = acc + np.outer(a32[:, q + 1], b32[q + 1])
            acc = acc + np.outer(a32[:, q], b32[q])
    return acc


def amx_rule(a, b):
    """op(A) @ B by tdpbf16ps's rule in float32 NumPy arithmetic: per step of 16 k pairs (32 k,
    from 0), the even members' products and the odd members' in two chains from 0, then
    acc = acc + (even + odd)."""
    a32, b32, acc = _widened(a, b)
    k = a32.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(0, k, 32):
            even = np.zeros_like(acc)
            odd = np.zeros_like(acc)
            for q in range(s, min(s + 32, k), 2):
                even = even + np.outer(a32[:, q], b32[q])
                if q + 1 < k:
                    odd = odd + np.outer(a32[:, q + 1], b32[q + 1])
            acc = acc + (even + odd)
    return acc


def rule(path, a, b):
    """The path's sums of op(A) @ B, bit for bit."""
    return amx_rule(a, b) if path == "amx" else pair_rule(a, b)


def reference64(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


def run(path, a, b, **kwargs):
    return _core._matmul_bf16_path_test(path, a, b, **kwargs)


# --- conversions -------------------------------------------------------------------------------


_ROUND_PATTERNS = """
import json, numpy as np
from densekit import kernels as K
rng = np.random.default_rng(1)
u = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
u[::3] = (u[::3] & 0x807FFFFF) | 0x7F800000  # NaN payloads (quiet and signalling), infinities
u[1::5] &= 0x807FFFFF  # subnormals and zeros
u[2::7] = (u[2::7] & 0xFFFF0000) | 0x8000  # ties
print(json.dumps(K.to_bfloat16(u.view(np.float32)).view(np.uint16).tolist()))
"""


@pytest.mark.skipif(len(PATHS) < 2, reason="one bf16 path: nothing to compare")
def test_to_bfloat16_gives_the_same_bits_on_every_path():
    # Where the bf16 path uses AVX512-BF16, the rounding runs on its conversion (and the
    # integer rounding for a vector holding a subnormal); the emulated path rounds with
    # integers. Every bit, NaN payloads included, is the same.
    emulated = json_of_child(_ROUND_PATTERNS, {"DENSEKIT_BF16": "emulated"}, timeout=60)
    for path in PATHS[:-1]:
        assert json_of_child(_ROUND_PATTERNS, {"DENSEKIT_BF16": path}, timeout=60) == emulated


def test_to_bfloat16_matches_ml_dtypes_on_every_bit_pattern_class():
    rng = np.random.default_rng(0)
    pieces = [
        rng.standard_normal(10_000).astype(np.float32),
        rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array(
            [
                0.0,
                -0.0,
                np.inf,
                -np.inf,
                3.4028235e38,
                -3.4028235e38,
                1e-45,
                -1e-45,
                1.1754942e-38,
                1.0 + 2**-8,
                1.0 + 3 * 2**-8,
                1.0 + 2**-9,
            ],
            np.float32,
        ),
        # exact ties between two bf16 values: even and odd upper halves
        (np.arange(0, 2**16, 7, dtype=np.uint32) << 16 | 0x8000).view(np.float32),
    ]
    x = np.concatenate(pieces)
    got = K.to_bfloat16(x)
    with np.errstate(invalid="ignore"):
        want = x.astype(BF16)
    assert got.dtype == BF16 and got.shape == x.shape
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(bits(got)[finite], bits(want)[finite])
    assert np.isnan(got.astype(np.float32)[~finite]).all()
    assert (bits(got)[~finite] & 0x8000 == bits(x)[~finite] >> 16 & 0x8000).all()  # sign kept


@pytest.mark.parametrize("shape", [(0,), (1,), (3, 0, 2), (7, 13), (2, 3, 5, 7), (100_003,)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conversions_round_trip_and_shapes(shape, threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    y = K.to_bfloat16(x, num_threads=threads)
    np.testing.assert_array_equal(bits(y), bits(x.astype(BF16)))
    back = K.from_bfloat16(y, num_threads=threads)
    assert back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, y.astype(np.float32))  # exact widening
    out = np.empty(shape, BF16)
    assert K.to_bfloat16(x, out=out) is out


def test_conversion_errors_name_the_argument():
    x16 = np.zeros(3, np.float16)
    with pytest.raises(TypeError, match=r"x: expected dtype bfloat16.*float16 is IEEE half"):
        K.from_bfloat16(x16)
    with pytest.raises(TypeError, match=r"x: expected dtype bfloat16.*uint16"):
        K.from_bfloat16(np.zeros(3, np.uint16))
    with pytest.raises(TypeError, match="x: expected dtype float32, got float64"):
        K.to_bfloat16(np.zeros(3))
    with pytest.raises(TypeError, match="out: expected dtype bfloat16, got float32"):
        K.to_bfloat16(np.zeros(3, np.float32), out=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="out: expected shape"):
        K.to_bfloat16(np.zeros(3, np.float32), out=np.zeros(4, BF16))
    with pytest.raises(ValueError, match="non-contiguous"):
        K.from_bfloat16(np.zeros((4, 4), BF16)[:, ::2])
    x = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="must not share memory"):
        K.from_bfloat16(x.view(BF16)[:8], out=x)


# --- the product ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matmul_equals_the_pair_rule_bitwise_and_is_near_float64(path, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    c = run(path, a, b)
    assert c.dtype == np.float32 and c.shape == (m, n)
    np.testing.assert_array_equal(bits(c), bits(rule(path, a, b)))
    bound = 2.0 * (k + 1) * 2.0**-24 * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
    assert (np.abs(c - reference64(a, b)) <= bound).all()


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("path", PATHS)
# k of 1025: many pairs of rows of a transposed A per row tile; odd k: the last pair's high
# half is zero
@pytest.mark.parametrize(("m", "n", "k"), [(17, 45, 39), (45, 70, 1025)])
def test_transposed_operands(path, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(2)
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    a_in = np.ascontiguousarray(a.T) if trans_a else a
    b_in = np.ascontiguousarray(b.T) if trans_b else b
    c = run(path, a_in, b_in, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_array_equal(bits(c), bits(rule(path, a, b)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_epilogue_is_the_float32_engine_s(path, activation):
    rng = np.random.default_rng(3)
    m, n, k = 19, 70, 51
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    bias = rng.standard_normal(n).astype(np.float32)
    start = rng.standard_normal((m, n)).astype(np.float32)
    out = start.copy()
    preact = np.empty((m, n), np.float32)
    run(path, a, b, out=out, bias=bias, preact=preact, activation=activation, accumulate=True)
    v = (start + rule(path, a, b)) + bias
    np.testing.assert_array_equal(bits(preact), bits(v))
    np.testing.assert_array_equal(bits(out), bits(K.activation_forward(v, activation=activation)))
    out16 = run(path, a, b, bias=bias, activation=activation, out_dtype="bfloat16")
    want = K.activation_forward(rule(path, a, b) + bias, activation=activation)
    np.testing.assert_array_equal(bits(out16), bits(want.astype(BF16)))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("path", PATHS)
def test_bitwise_identical_for_any_thread_count(path, trans_a):
    rng = np.random.default_rng(4)
    a, b = bf16(rng, (131, 517)), bf16(rng, (517, 300))
    a_in = np.ascontiguousarray(a.T) if trans_a else a
    first = run(path, a_in, b, trans_a=trans_a, num_threads=1)
    np.testing.assert_array_equal(bits(first), bits(rule(path, a, b)))
    for threads in (2, 3, 7):
        again = run(path, a_in, b, trans_a=trans_a, num_threads=threads)
        np.testing.assert_array_equal(bits(again), bits(first))


@pytest.mark.parametrize("path", PATHS)
def test_a_long_k_in_chunks_of_few_panels_gives_the_rule_s_bits(path):
    """k = 4100: the AMX tiles cut B into chunks of a few panels (at most 1 MiB each), and
    the register tiles into several k blocks; the bits are the rule's on 1 and 2 threads."""
    rng = np.random.default_rng(41)
    a, b = bf16(rng, (40, 4100)), bf16(rng, (4100, 200))
    want = rule(path, a, b)
    for threads in (1, 2):
        np.testing.assert_array_equal(bits(run(path, a, b, num_threads=threads)), bits(want))


@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(("m", "k", "n"), [(64, 300, 500), (40, 301, 470), (200, 520, 256)])
@pytest.mark.parametrize("path", PATHS)
def test_threads_taking_columns_of_b_give_the_same_bits(path, m, k, n, trans_b):
    """A product of a few row tiles, or with m <= n, runs as one product per part of B's
    columns on several threads (each packing its own panels): the epilogue (bias, preact,
    accumulate, bf16 output) sees each column where it is, and the bits are those of one
    thread."""
    rng = np.random.default_rng(m + n)
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    b_in = np.ascontiguousarray(b.T) if trans_b else b
    bias = rng.standard_normal(n).astype(np.float32)
    start = rng.standard_normal((m, n)).astype(np.float32)

    def product(threads):
        out, preact = start.copy(), np.empty((m, n), np.float32)
        options = {"trans_b": trans_b, "bias": bias, "activation": "gelu", "num_threads": threads}
        run(path, a, b_in, out=out, preact=preact, accumulate=True, **options)
        out16 = run(path, a, b_in, out_dtype="bfloat16", **options)
        return out, preact, out16

    first = product(1)
    np.testing.assert_array_equal(bits(first[1]), bits((start + rule(path, a, b)) + bias))
    for threads in (2, 3):
        for got, want in zip(product(threads), first):
            np.testing.assert_array_equal(bits(got), bits(want), err_msg=f"threads={threads}")


def check_every_layout(path, a, b, want):
    """op(a) @ op(b) with a and b stored as given or transposed, on 1 to 3 threads: the bits
    of `want` (the pair rule's sums)."""
    a_t, b_t = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    for threads in (1, 2, 3):
        for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
            got = run(
                path,
                a_t if ta else a,
                b_t if tb else b,
                trans_a=ta,
                trans_b=tb,
                num_threads=threads,
            )
            np.testing.assert_array_equal(bits(got), bits(want))


def check_epilogues(path, rng, a, b, want, activation):
    """C += op(a) @ op(b) with bias, preact and `activation`, and a bf16 output with bias and
    relu, against the sums `want` (the pair rule's) finished by the float32 kernels."""
    m, n = want.shape
    bias = rng.standard_normal(n).astype(np.float32)
    start = rng.standard_normal((m, n)).astype(np.float32)
    out, preact = start.copy(), np.empty((m, n), np.float32)
    run(path, a, b, out=out, bias=bias, preact=preact, activation=activation, accumulate=True)
    v = (start + want) + bias
    np.testing.assert_array_equal(bits(preact), bits(v))
    np.testing.assert_array_equal(bits(out), bits(K.activation_forward(v, activation=activation)))
    out16 = run(path, a, b, bias=bias, activation="relu", out_dtype="bfloat16", num_threads=2)
    want16 = K.activation_forward(want + bias, activation="relu").astype(BF16)
    np.testing.assert_array_equal(bits(out16), bits(want16))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 13, 14])
@pytest.mark.parametrize(
    "n,k", [(1, 1), (31, 2), (32, 7), (33, 64), (96, 95), (97, 130), (200, 301)]
)
def test_few_rows_with_a_row_major_b_give_the_pair_rule_s_bits(path, m, n, k):
    # One row tile (m <= 14) with a row-major b: b is read in place, its pair rows joined in
    # registers (no packing), on the paths that can; with trans_b it is packed. Every panel
    # tail, odd k, transposed a, thread count and epilogue gives the same bits.
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    want = rule(path, a, b)
    check_every_layout(path, a, b, want)
    check_epilogues(path, rng, a, b, want, "gelu")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("trans_b", [False, True])
def test_every_tile_height_reading_a_in_place_gives_the_pair_rule_s_bits(path, trans_b):
    # A row-major bf16 a of even k is read in place, each tile height (1 to 14 rows; a few
    # rows take wide tiles) addressing its rows its own way (bf16_tiles.inc): m from 1 to 29
    # gives every height, with b packed (trans_b) or, past 14 rows, row-major.
    rng = np.random.default_rng(29)
    for m in range(1, 30):
        a, b = bf16(rng, (m, 36)), bf16(rng, (36, 70))
        b_in = np.ascontiguousarray(b.T) if trans_b else b
        got = run(path, a, b_in, trans_b=trans_b)
        np.testing.assert_array_equal(bits(got), bits(rule(path, a, b)), err_msg=f"m={m}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [2048, 2050, 4096])
def test_rows_that_crowd_l1_give_the_pair_rule_s_bits(path, k):
    # A row-major bf16 a whose rows lie a multiple of 4 KiB apart (or nearly) would put a row
    # tile's lines in one L1 set: its rows are copied to a stride of an odd number of cache
    # lines and read there, or packed word-major on the paths without tiles that read A in
    # place (tile_loop.hpp), with the same chains, so the same bits, on any thread count.
    rng = np.random.default_rng(k)
    a, b = bf16(rng, (29, k)), bf16(rng, (k, 40))
    want = rule(path, a, b)
    for threads in (1, 2):
        np.testing.assert_array_equal(bits(run(path, a, b, num_threads=threads)), bits(want))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("offset", [0, 1, 8])
def test_aligned_or_not_a_and_out_give_the_same_bits(path, offset):
    # The block tiles (amx) read a row-major bf16 A in place and accumulate in a float32 out
    # only where their tile rows are whole cache lines (64-byte aligned); otherwise A is
    # packed and the sums go through task-local blocks: the same bits either way. `offset`
    # elements past a 64-byte boundary: A 0, 2 or 16 bytes, out 0, 4 or 32.
    rng = np.random.default_rng(offset)
    m, n, k = 70, 96, 64
    a = at_offset(bf16(rng, (m, k)), offset)
    b = bf16(rng, (k, n))
    want = rule(path, a, b)
    for threads in (1, 2):
        out = at_offset(np.zeros((m, n), np.float32), offset)
        got = run(path, a, b, out=out, num_threads=threads)
        assert got is out
        np.testing.assert_array_equal(bits(out), bits(want), err_msg=f"threads={threads}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("m", "n"), [(15, 1), (64, 3), (257, 10), (300, 16), (97, 33)])
@pytest.mark.parametrize("k", [1, 6, 131])
def test_narrow_products_give_the_pair_rule_s_bits(path, m, n, k):
    # Few columns over many rows run as C^T = B^T A^T (the panels would be mostly padding):
    # the same chains of the same exact products, finished by row as the direct product is.
    rng = np.random.default_rng(m * 131 + n * 7 + k)
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    want = rule(path, a, b)
    check_every_layout(path, a, b, want)
    check_epilogues(path, rng, a, b, want, "elu")


def test_paths_agree_on_subnormals_infinities_and_nan():
    rng = np.random.default_rng(5)
    a = bf16(rng, (9, 40))
    b = bf16(rng, (40, 33))
    a.view(np.uint16)[:, ::5] = 0x0003  # subnormal: read as zero
    b.view(np.uint16)[::7, 3] = 0x0011
    a.view(np.uint16)[2, 7] = 0x7F80  # inf
    b.view(np.uint16)[3, 9] = 0xFFC0  # nan
    a.view(np.uint16)[4, :] = 0x1F80  # 2^-64: products of 2^-128 flush to zero
    b.view(np.uint16)[:, 11] = 0x1F80
    zeroed_a, zeroed_b = a.copy(), b.copy()
    zeroed_a.view(np.uint16)[:, ::5] = 0
    zeroed_b.view(np.uint16)[::7, 3] = 0
    results = {path: run(path, a, b) for path in PATHS}
    # the paths of one rule agree on every bit (NaN payloads aside)
    pair_paths = [results[path] for path in PATHS if path != "amx"]
    for r in pair_paths[1:]:
        same = (bits(r) == bits(pair_paths[0])) | (np.isnan(r) & np.isnan(pair_paths[0]))
        assert same.all()
    for path, c in results.items():
        assert c[4, 11] == 0.0  # every product is below the normal range
        assert np.isnan(c[:, 9]).all()  # column 9 meets b's NaN
        ok = ~np.isnan(c)
        ok[4, :] = False
        ok[:, 11] = False
        with np.errstate(invalid="ignore"):
            want = rule(path, zeroed_a, zeroed_b)
        np.testing.assert_array_equal(bits(c)[ok], bits(want)[ok], err_msg=path)


@given(
    m=st.sampled_from([0, 1, 2, 3, 5, 7, 13, 14, 15, 29, 31, 33, 70]),
    n=st.sampled_from([0, 1, 2, 15, 16, 17, 31, 33, 97, 129, 257]),
    k=st.sampled_from([0, 1, 2, 3, 5, 7, 31, 32, 33, 64, 255, 257, 259]),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_hypothesis_shapes_on_every_path(m, n, k, trans_a, trans_b, seed):
    rng = np.random.default_rng(seed)
    a, b = bf16(rng, (m, k)), bf16(rng, (k, n))
    a_in = np.ascontiguousarray(a.T) if trans_a else a
    b_in = np.ascontiguousarray(b.T) if trans_b else b
    for path in PATHS:
        got = run(path, a_in, b_in, trans_a=trans_a, trans_b=trans_b)
        np.testing.assert_array_equal(bits(got), bits(rule(path, a, b)), err_msg=path)


_SUBPROCESS = """
import json, sys
import ml_dtypes, numpy as np
from densekit import _core
rng = np.random.default_rng(6)
a = (rng.standard_normal((23, 301))).astype(ml_dtypes.bfloat16)
b = (rng.standard_normal((301, 77))).astype(ml_dtypes.bfloat16)
c = _core.matmul_bf16(a, b, activation="gelu", bias=np.ones(77, np.float32))
print(json.dumps({"config": _core.bf16_config(), "bits": c.view(np.uint32).tolist()}))
"""


@pytest.mark.parametrize(
    "env",
    [{"DENSEKIT_ISA": "avx2"}, {"DENSEKIT_ISA": "portable"}, {"DENSEKIT_BF16": "emulated"}],
)
def test_forced_paths_give_the_same_bits(env):
    def child(extra):
        return json_of_child(_SUBPROCESS, extra)

    # the baseline is a path of the emulation's rule: avx512_bf16 where amx is the default
    base, forced = child(PAIR_RULE_DEFAULT), child(env)
    assert forced["config"]["path"] == "emulated"
    if "DENSEKIT_BF16" in env:
        assert forced["config"]["forced"]
    # gelu's vector math differs between float32 ISAs: compare the bits only where the ISA
    # of the epilogue is the same, and the product itself always (via linear runs above).
    if "DENSEKIT_ISA" not in env:
        assert forced["bits"] == base["bits"]
    else:
        got = np.array(forced["bits"], np.uint32).view(np.float32)
        want = np.array(base["bits"], np.uint32).view(np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_best_path_is_the_default_and_each_lower_one_can_be_forced():
    code = "from densekit import _core; import json; print(json.dumps(_core.bf16_config()))"
    assert _core.bf16_config()["path"] == PATHS[0] == _core.bf16_config()["best"]
    for path in PATHS[1:]:
        config = json_of_child(code, {"DENSEKIT_BF16": path}, timeout=60)
        assert config["path"] == path and config["forced"] and config["best"] == PATHS[0]


# Child-process pieces: a 4 KiB alternate signal stack (too small for the AMX signal frame;
# returns whether Linux accepted it), and a bf16 product after densekit's import (which asks
# for the tile state) with what the child reports.
_SMALL_STACK = """
import ctypes, json
def install_small_stack():
    libc = ctypes.CDLL(None, use_errno=True)
    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]
    global memory
    memory = ctypes.create_string_buffer(4096)
    stack = Stack(ctypes.cast(memory, ctypes.c_void_p), 0, 4096)
    return libc.sigaltstack(ctypes.byref(stack), None) == 0
"""
_PRODUCT = """
import ml_dtypes, numpy as np
from densekit import _core
a = np.arange(40 * 64).reshape(40, 64).astype(ml_dtypes.bfloat16)
c = _core.matmul_bf16(a, a.T.copy())
"""
_REPORT = """
print(json.dumps({"bf16": _core.bf16_config(), "int8": _core.int8_config(),
                  "small_stack_accepted": accepted, "bits": c.view(np.uint32).tolist()}))
"""
_REFUSED = _SMALL_STACK + "accepted = install_small_stack()\n" + _PRODUCT + _REPORT
_SMALL_STACK_AFTER_USE = _SMALL_STACK + _PRODUCT + "accepted = install_small_stack()\n" + _REPORT


def assert_avx512_bf16_bits(child):
    """The child's product has the avx512_bf16 path's bits."""
    a = (np.arange(40 * 64).reshape(40, 64)).astype(BF16)
    want = run("avx512_bf16", a, np.ascontiguousarray(a.T))
    np.testing.assert_array_equal(np.array(child["bits"], np.uint32), bits(want))


@pytest.mark.skipif(PATHS[0] != "amx", reason="the AMX path is not this CPU's best")
def test_a_refused_amx_tile_state_leaves_the_avx512_paths():
    # A 4 KiB alternate signal stack is too small for the AMX signal frame: Linux refuses the
    # tile state (arch_prctl ARCH_REQ_XCOMP_PERM), and the products run on the next path.
    child = json_of_child(_REFUSED, {}, timeout=60)
    assert child["small_stack_accepted"]
    assert child["bf16"]["path"] == "avx512_bf16" and "amx" not in child["bf16"]["available"]
    assert child["int8"]["path"] == "avx512_vnni" and "amx" not in child["int8"]["available"]
    assert "refused" in child["bf16"]["amx_note"] == child["int8"]["amx_note"]
    assert_avx512_bf16_bits(child)
    assert _core.bf16_config()["amx_note"] == ""


@pytest.mark.skipif(PATHS[0] != "amx", reason="the AMX path is not this CPU's best")
def test_densekit_amx_0_never_asks_for_the_tile_state():
    # Once Linux grants the tile state, it refuses a later 4 KiB alternate signal stack (too
    # small for the AMX signal frame); with DENSEKIT_AMX=0 the state is never asked for, so the
    # same stack is accepted after a bf16 product, which ran on the AVX-512 path.
    granted = json_of_child(_SMALL_STACK_AFTER_USE, {}, timeout=60)
    assert granted["bf16"]["path"] == "amx" and not granted["small_stack_accepted"]
    for value in ("0", "off", "False"):
        child = json_of_child(_SMALL_STACK_AFTER_USE, {"DENSEKIT_AMX": value}, timeout=60)
        assert child["small_stack_accepted"]
        assert child["bf16"]["path"] == child["bf16"]["best"] == "avx512_bf16"
        assert child["int8"]["path"] == "avx512_vnni" and "amx" not in child["int8"]["available"]
        assert child["bf16"]["amx_note"] == child["int8"]["amx_note"]
        assert child["bf16"]["amx_note"].startswith(f"DENSEKIT_AMX='{value}'")
        assert_avx512_bf16_bits(child)
    # a value of neither kind is reported and ignored
    child = json_of_child(_SMALL_STACK_AFTER_USE, {"DENSEKIT_AMX": "maybe"}, timeout=60)
    assert child["bf16"]["path"] == "amx" and "'maybe' is not one of" in child["bf16"]["amx_note"]


def test_bad_path_request_is_reported_not_fatal():
    code = "from densekit import _core; import json; print(json.dumps(_core.bf16_config()))"
    config = json_of_child(code, {"DENSEKIT_BF16": "amx_please"}, timeout=60)
    assert "DENSEKIT_BF16='amx_please' is not one of" in config["note"]
    assert not config["forced"]


def test_matmul_errors_name_the_argument():
    a = np.zeros((3, 4), BF16)
    b = np.zeros((4, 5), BF16)
    with pytest.raises(TypeError, match=r"a: expected dtype bfloat16 .*float16 is IEEE half"):
        K.matmul_bf16(np.zeros((3, 4), np.float16), b)
    with pytest.raises(TypeError, match="b: expected dtype bfloat16"):
        K.matmul_bf16(a, np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="b: expected 4 rows in op"):
        K.matmul_bf16(a, np.zeros((5, 5), BF16))
    with pytest.raises(ValueError, match="out_dtype: expected 'float32' or 'bfloat16'"):
        K.matmul_bf16(a, b, out_dtype="float16")
    with pytest.raises(ValueError, match="accumulate=True needs out="):
        K.matmul_bf16(a, b, accumulate=True)
    with pytest.raises(ValueError, match="accumulate: needs out_dtype='float32'"):
        K.matmul_bf16(a, b, out=np.zeros((3, 5), BF16), accumulate=True, out_dtype="bfloat16")
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        K.matmul_bf16(a, b, out=np.zeros((3, 5)))
    with pytest.raises(ValueError, match="bias: expected shape"):
        K.matmul_bf16(a, b, bias=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="activation: softmax is a row operation"):
        K.matmul_bf16(a, b, activation="softmax")
    with pytest.raises(ValueError, match="activation: log_softmax is a row operation"):
        K.matmul_bf16(a, b, activation="log_softmax")
    with pytest.raises(ValueError, match="path: expected 'amx', 'avx512_bf16' or 'emulated'"):
        _core._matmul_bf16_path_test("tpu", a, b)
    with pytest.raises(ValueError, match="a: expected a 2-d array"):
        K.matmul_bf16(np.zeros(4, BF16), b)
