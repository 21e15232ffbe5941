"""DenseChain (a model's inference in one kernel call): the same bits as the layer-by-layer
kernels, for awkward shapes and every thread count; arrays held by reference; rejections,
including arrays reshaped after the chain was made."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from densekit import kernels

from .helpers import THREAD_COUNTS, dims, dtypes, random_array

# Step lists as (units or None for an activation alone, activation, alpha).
CHAINS = [
    [(7, "relu", None)],
    [(5, "relu", None), (3, "softmax", None)],
    [(None, "tanh", None), (4, "leaky_relu", 0.1), (None, "gelu", None), (2, "linear", None)],
    [(17, "elu", 0.5), (33, "sigmoid", None), (1, None, None), (None, "softmax", None)],
]


def make_chain(rng, k, spec, dtype, bias=True):
    """The chain and its steps as arrays; k is the input width."""
    steps = []
    for units, activation, alpha in spec:
        if units is None:
            steps.append((None, None, activation, alpha))
            continue
        w = random_array(rng, (k, units), dtype, 1.0 / np.sqrt(max(k, 1)))
        b = random_array(rng, (units,), dtype) if bias else None
        steps.append((w, b, activation, alpha))
        k = units
    return kernels.DenseChain(steps), steps


def layer_by_layer(x, steps, num_threads=None):
    for w, b, activation, alpha in steps:
        if w is None:
            x = kernels.activation_forward(x, activation, alpha=alpha, num_threads=num_threads)
        else:
            x = kernels.dense_forward(x, w, b, activation, alpha=alpha, num_threads=num_threads)
    return x


@settings(max_examples=25)
@given(n=dims, k=dims, chain=st.sampled_from(range(len(CHAINS))), dtype=dtypes, bias=st.booleans())
def test_same_bits_as_layer_by_layer(n, k, chain, dtype, bias):
    rng = np.random.default_rng(n * 1009 + k * 13 + chain)
    dense_chain, steps = make_chain(rng, k, CHAINS[chain], dtype, bias)
    x = random_array(rng, (n, k), dtype)
    expected = layer_by_layer(x, steps)
    got = dense_chain(x)
    assert got.dtype == dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_for_every_thread_count(dtype):
    rng = np.random.default_rng(1)
    dense_chain, steps = make_chain(
        rng, 784, [(256, "relu", None), (128, "relu", None), (10, "softmax", None)], dtype
    )
    for n in (1, 3, 64):
        x = random_array(rng, (n, 784), dtype)
        expected = layer_by_layer(x, steps, num_threads=1).tobytes()
        for threads in THREAD_COUNTS:
            assert dense_chain(x, num_threads=threads).tobytes() == expected


def test_out_is_filled_leading_axes_kept_and_weights_held_by_reference():
    rng = np.random.default_rng(2)
    dense_chain, steps = make_chain(rng, 6, [(4, "relu", None), (3, "linear", None)], np.float32)
    assert (len(dense_chain), dense_chain.input_width, dense_chain.output_width) == (2, 6, 3)
    x = random_array(rng, (2, 5, 6), np.float32)
    out = np.empty((2, 5, 3), np.float32)
    assert dense_chain(x, out=out) is out
    np.testing.assert_array_equal(out, layer_by_layer(x, steps))
    steps[1][0][...] *= 2  # changed in place: seen by the next call
    np.testing.assert_array_equal(dense_chain(x), layer_by_layer(x, steps))


def test_activations_alone_take_any_width():
    dense_chain = kernels.DenseChain([(None, None, "relu"), (None, None, "softmax")])
    assert dense_chain.input_width == -1 and dense_chain.output_width == -1
    x = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float64)
    expected = kernels.activation_forward(kernels.activation_forward(x, "relu"), "softmax")
    assert dense_chain(x).tobytes() == expected.tobytes()


def test_empty_batch():
    rng = np.random.default_rng(4)
    dense_chain, _ = make_chain(rng, 5, [(3, "relu", None)], np.float32)
    assert dense_chain(np.empty((0, 5), np.float32)).shape == (0, 3)


def rejection_cases():
    f32 = np.ones((3, 2), np.float32)
    b32 = np.zeros(2, np.float32)
    chain = kernels.DenseChain([(f32, b32, "relu")])
    storage = np.ones(8, np.float32)
    reshaped = np.ones((4, 2), np.float32)
    reshaped_chain = kernels.DenseChain([(reshaped, None, "relu")])

    def reshape_then_call():
        reshaped.shape = (2, 4)
        reshaped_chain(np.ones((1, 4), np.float32))

    return [
        ("steps", lambda: kernels.DenseChain("relu"), TypeError),
        ("steps", lambda: kernels.DenseChain([]), ValueError),
        ("steps[0]", lambda: kernels.DenseChain([(f32, b32)]), TypeError),
        ("steps[0]", lambda: kernels.DenseChain([[f32, b32, "relu"]]), TypeError),
        ("steps[0]", lambda: kernels.DenseChain([(None, b32, "relu")]), ValueError),
        ("steps[0] activation", lambda: kernels.DenseChain([(f32, b32, "swish")]), ValueError),
        (
            "steps[0] w",
            lambda: kernels.DenseChain([(f32.astype(np.int32), None, "relu")]),
            TypeError,
        ),
        (
            "steps[0] w",
            lambda: kernels.DenseChain([(np.ones(3, np.float32), None, "relu")]),
            ValueError,
        ),
        (
            "steps[0] b",
            lambda: kernels.DenseChain([(f32, np.zeros(3, np.float32), "relu")]),
            ValueError,
        ),
        (
            "steps[1] w",
            lambda: kernels.DenseChain([(f32, None, "relu"), (f32, None, "relu")]),
            ValueError,
        ),
        (
            "steps[1] w",
            lambda: kernels.DenseChain(
                [(f32, None, "relu"), (f32.T.astype(np.float64), None, "relu")]
            ),
            TypeError,
        ),
        ("x", lambda: chain(np.ones((1, 3), np.float64)), TypeError),
        ("x", lambda: chain(np.ones((1, 4), np.float32)), ValueError),
        ("x", lambda: chain(np.ones((4, 6), np.float32)[:, ::2]), ValueError),
        (
            "out",
            lambda: chain(np.ones((1, 3), np.float32), out=np.empty((1, 3), np.float32)),
            ValueError,
        ),
        (
            "out",
            lambda: chain(np.ones((1, 3), np.float32), out=np.empty((1, 2), np.float64)),
            TypeError,
        ),
        (
            "out",
            lambda: chain(storage[:6].reshape(2, 3), out=storage[4:8].reshape(2, 2)),
            ValueError,
        ),
        ("out", lambda: chain(np.ones((1, 3), np.float32), out=b32.reshape(1, 2)), ValueError),
        ("num_threads", lambda: chain(np.ones((1, 3), np.float32), num_threads=0), ValueError),
        ("steps[0] w (changed since the chain was made)", reshape_then_call, ValueError),
    ]


CASES = rejection_cases()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_rejections_name_the_argument(case):
    argument, call, error = rejection_cases()[case]
    with pytest.raises(error) as info:
        call()
    assert str(info.value).startswith(argument + ":"), str(info.value)
