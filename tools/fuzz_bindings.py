"""A fuzzer for the binding layer: random calls to every public function of densekit._core.

Hypothesis draws, for each call, one function (every kernel, DenseChain, pack_weights and the
thread settings), then its arguments: arrays of awkward shapes (0, 1, primes, and zero-size
arrays whose other extents are huge, so that size products overflow 32 and 64 bits), every
dtype, non-contiguous, Fortran-ordered, read-only and overlapping views, NaN and inf, labels out
of range, and absurd scalars for keywords (0, -1, 2**40, 2**64, NaN, strings, bools). A call
may return, or raise TypeError, ValueError, OverflowError or MemoryError with a message; any
other exception fails, and a crash kills the process (the test suite runs the fuzzer in a
child process with an address-space limit, so that no allocation it provokes can exhaust the
machine).

    python -m tools.fuzz_bindings --examples 20000          # a longer run
    python -m tools.fuzz_bindings --examples 500 --seed 0    # what CI runs (tests/)
    tools/sanitize.sh                                         # CI's run under ASan + UBSan

Failures print the falsifying call, shrunk by Hypothesis; each one found becomes a regression
test in tests/test_fuzz_bindings.py.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import sys

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from densekit import _core

try:
    import ml_dtypes
except ImportError:  # the bf16 kernels then refuse every array; fuzz them without it
    ml_dtypes = None

ACCEPTED = (TypeError, ValueError, OverflowError, MemoryError)
HUGE = (2**31, 2**32 + 1, 2**40, 2**62)
SMALL = (0, 1, 2, 3, 5, 7, 13, 16, 17, 31)
DTYPES = ("float32", "float64", "float16", "int32", "int64", "uint8", "bool", "complex64", "O")
if ml_dtypes is not None:
    DTYPES += (np.dtype(ml_dtypes.bfloat16),)
SCALARS = (None, 0, 1, -1, 2, 3, 0.5, -0.0, 1e-8, 2**31, 2**40, 2**63, 2**64, -(2**64))
SCALARS += (float("nan"), float("inf"), -float("inf"), True, False, "relu", "mean", "", b"x")
ACTIVATION_NAMES = (*_core.ACTIVATIONS, "RELU", "swish", None)


def functions() -> dict[str, tuple[list[str], list[str]]]:
    """Public callables of _core and their positional and keyword-only parameter names."""
    out = {}
    for name in dir(_core):
        obj = getattr(_core, name)
        if name.startswith("_") or not callable(obj) or name in ("PackedWeights",):
            continue
        doc = (obj.__doc__ or "").splitlines()
        match = re.match(rf"{name}\((.*)\) ->", doc[0]) if doc else None
        if name == "DenseChain":
            out[name] = (["steps"], [])
            continue
        if match is None:
            continue
        positional, keywords, star = [], [], False
        for part in match.group(1).split(", "):
            if not part:
                continue
            if part == "*":
                star = True
                continue
            (keywords if star else positional).append(part.split(":")[0])
        out[name] = (positional, keywords)
    return out


FUNCTIONS = functions()


@st.composite
def arrays(draw):
    """An array of any dtype and layout; nonzero-size arrays stay small."""
    ndim = draw(st.integers(0, 3))
    shape = [draw(st.sampled_from(SMALL)) for _ in range(ndim)]
    if ndim >= 2 and draw(st.booleans()):  # zero-size with huge extents elsewhere
        shape[draw(st.integers(0, ndim - 1))] = 0
        for d in range(ndim):
            if shape[d] != 0 and draw(st.booleans()):
                shape[d] = draw(st.sampled_from(HUGE))
    dtype = draw(st.sampled_from(DTYPES))
    size = int(np.prod(shape, dtype=object))
    if size > 0:
        values = draw(st.sampled_from(("normal", "labels", "special", "zeros")))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        if values == "normal":
            data = rng.standard_normal(size) * 3
        elif values == "labels":
            data = rng.integers(-3, 40, size).astype(np.float64)
        elif values == "special":
            data = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, -1e308, 5e-324], size)
        else:
            data = np.zeros(size)
        with np.errstate(all="ignore"):
            a = data.astype(dtype).reshape(shape)
    else:
        try:
            a = np.empty(shape, dtype=dtype)
        except ValueError:  # NumPy refuses extents whose product overflows, even at size 0
            a = np.empty([min(d, 2**20) for d in shape], dtype=dtype)
    layout = draw(st.sampled_from(("c", "c", "f", "strided", "readonly", "transposed")))
    if layout == "f":
        a = np.asfortranarray(a)
    elif layout == "strided" and ndim >= 1 and size > 0:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "readonly":
        a.setflags(write=False)
    elif layout == "transposed":
        a = a.T
    return a


def values_for(draw, pool: list, name: str):
    """A value for parameter `name`: an array, an earlier argument (aliasing), or a scalar."""
    if name == "activation":
        return draw(st.sampled_from(ACTIVATION_NAMES))
    if name in ("reduction",):
        return draw(st.sampled_from(("mean", "sum", "none", "max", None, 3)))
    if name in ("dtype",):
        return draw(st.sampled_from(("float32", "float64", "int8", None)))
    kind = draw(st.sampled_from(("array", "array", "alias", "scalar", "none")))
    if kind == "alias" and pool:
        return draw(st.sampled_from(pool))
    if kind == "array":
        return draw(arrays())
    if kind == "none":
        return None
    return draw(st.sampled_from(SCALARS))


# Well-formed calls: positional and keyword parameters with their kinds. "n,k" is a float
# array of that shape (symbols drawn per call, shared between arrays), "labels:n,c" integer
# class labels, "sorted:t" an ascending float array, the other kinds scalars. A drawn call is
# then mutated in zero or more places.
LOSS = {
    "pos": [("prediction", "n,c"), ("target", "n,c")],
    "kw": {
        "reduction": "reduction",
        "sample_weight": "n",
        "compute_grad": "bool",
        "grad_out": "n,c",
        "num_threads": "threads",
    },
}
SPECS = {
    "dense_forward": {
        "pos": [("x", "n,k"), ("w", "k,m"), ("b", "m"), ("activation", "act")],
        "kw": {"out": "n,m", "preact_out": "n,m", "alpha": "alpha", "num_threads": "threads"},
    },
    "dense_backward": {
        "pos": [("dy", "n,m"), ("x", "n,k"), ("w", "k,m"), ("y", "n,m"), ("preact", "n,m")],
        "kw": {
            "activation": "act",
            "need_dx": "bool",
            "need_db": "bool",
            "need_dw": "bool",
            "dx_out": "n,k",
            "dw_out": "k,m",
            "db_out": "m",
            "accumulate": "bool",
            "alpha": "alpha",
            "num_threads": "threads",
        },
    },
    "activation_forward": {
        "pos": [("z", "n,m"), ("activation", "act")],
        "kw": {"out": "n,m", "alpha": "alpha", "num_threads": "threads"},
    },
    "activation_backward": {
        "pos": [("dy", "n,m"), ("activation", "act")],
        "kw": {"y": "n,m", "z": "n,m", "out": "n,m", "alpha": "alpha", "num_threads": "threads"},
    },
    "relu_forward": {
        "pos": [("z", "n,m")],
        "kw": {
            "max_value": "real",
            "negative_slope": "real",
            "threshold": "real",
            "out": "n,m",
            "num_threads": "threads",
        },
    },
    "relu_backward": {
        "pos": [("dy", "n,m"), ("z", "n,m")],
        "kw": {
            "max_value": "real",
            "negative_slope": "real",
            "threshold": "real",
            "out": "n,m",
            "num_threads": "threads",
        },
    },
    "mse": LOSS,
    "mae": LOSS,
    "huber": {"pos": LOSS["pos"], "kw": {**LOSS["kw"], "delta": "real"}},
    "softmax_cross_entropy": {
        "pos": [("prediction", "n,c"), ("target", "labels:n,c")],
        "kw": {**LOSS["kw"], "label_smoothing": "real"},
    },
    "sigmoid_binary_cross_entropy": {
        "pos": LOSS["pos"],
        "kw": {**LOSS["kw"], "label_smoothing": "real"},
    },
    "sgd_step": {
        "pos": [("param", "s"), ("grad", "s")],
        "kw": {
            "lr": "real",
            "momentum": "real",
            "velocity": "s",
            "nesterov": "bool",
            "weight_decay": "real",
            "step": "step",
            "convention": "convention",
            "num_threads": "threads",
        },
    },
    "adam_step": {
        "pos": [("param", "s"), ("grad", "s"), ("m", "s"), ("v", "s")],
        "kw": {
            "step": "step",
            "lr": "real",
            "beta1": "real",
            "beta2": "real",
            "eps": "real",
            "weight_decay": "real",
            "decoupled_weight_decay": "bool",
            "v_max": "s",
            "convention": "convention",
            "num_threads": "threads",
        },
    },
    "rmsprop_step": {
        "pos": [("param", "s"), ("grad", "s"), ("square_avg", "s")],
        "kw": {
            "lr": "real",
            "alpha": "real",
            "eps": "real",
            "momentum": "real",
            "velocity": "s",
            "centered": "bool",
            "grad_avg": "s",
            "convention": "convention",
            "num_threads": "threads",
        },
    },
    "nadam_step": {
        "pos": [("param", "s"), ("grad", "s"), ("m", "s"), ("v", "s")],
        "kw": {
            "step": "step",
            "lr": "real",
            "beta1": "real",
            "beta2": "real",
            "eps": "real",
            "weight_decay": "real",
            "decoupled_weight_decay": "bool",
            "momentum_decay": "real",
            "mu_product": "real",
            "convention": "convention",
            "num_threads": "threads",
        },
    },
    "adamax_step": {
        "pos": [("param", "s"), ("grad", "s"), ("m", "s"), ("u", "s")],
        "kw": {
            "step": "step",
            "lr": "real",
            "beta1": "real",
            "beta2": "real",
            "eps": "real",
            "weight_decay": "real",
            "convention": "convention",
            "num_threads": "threads",
        },
    },
    "adagrad_step": {
        "pos": [("param", "s"), ("grad", "s"), ("sum", "s")],
        "kw": {
            "lr": "real",
            "step": "step",
            "lr_decay": "real",
            "eps": "real",
            "weight_decay": "real",
            "convention": "convention",
            "num_threads": "threads",
        },
    },
    "lion_step": {
        "pos": [("param", "s"), ("grad", "s"), ("m", "s")],
        "kw": {
            "lr": "real",
            "beta1": "real",
            "beta2": "real",
            "weight_decay": "real",
            "num_threads": "threads",
        },
    },
    "clip_by_global_norm": {"pos": [("grads", "list:s"), ("max_norm", "real")], "kw": {}},
    "take_rows": {
        "pos": [("source", "r,c"), ("indices", "labels:q,r")],
        "kw": {"out": "q,c", "num_threads": "threads"},
    },
    "empty": {"pos": [("shape", "shape"), ("dtype", "dtype")], "kw": {}},
    "zeros": {"pos": [("shape", "shape"), ("dtype", "dtype")], "kw": {}},
    "pack_weights": {"pos": [("w", "k,m")], "kw": {"num_threads": "threads"}},
    "confusion_counts": {
        "pos": [("prediction", "n,c"), ("target", "n,c"), ("thresholds", "sorted:t")],
        "kw": {
            "sample_weight": "n",
            "column_weight": "c",
            "top_k": "step",
            "class_id": "step",
            "multi_label": "bool",
            "out": "q,t",
            "accumulate": "bool",
            "num_threads": "threads",
        },
    },
    "top_k_hits": {
        "pos": [("prediction", "n,c"), ("target", "labels:n,c"), ("k", "step")],
        "kw": {"sample_weight": "n", "num_threads": "threads"},
    },
    # Low precision: "bf16:" arrays are ml_dtypes.bfloat16, "f32:" float32, "qw:" weights
    # quantized to int8 (QuantizedWeights), "bw:" weights rounded to bf16 (Bf16Weights).
    "to_bfloat16": {"pos": [("x", "f32:n,k")], "kw": {"out": "bf16:n,k", "num_threads": "threads"}},
    "from_bfloat16": {
        "pos": [("x", "bf16:n,k")],
        "kw": {"out": "f32:n,k", "num_threads": "threads"},
    },
    "matmul_bf16": {
        "pos": [("a", "bf16:n,k"), ("b", "bf16:k,m")],
        "kw": {
            "out": "f32:n,m",
            "trans_a": "bool",
            "trans_b": "bool",
            "bias": "f32:m",
            "preact": "f32:n,m",
            "activation": "act",
            "alpha": "alpha",
            "accumulate": "bool",
            "out_dtype": "out_dtype",
            "num_threads": "threads",
        },
    },
    "dense_forward_bf16": {
        "pos": [("x", "f32:n,k"), ("w", "bw:k,m"), ("b", "f32:m")],
        "kw": {
            "activation": "act",
            "alpha": "alpha",
            "out": "f32:n,m",
            "preact_out": "f32:n,m",
            "num_threads": "threads",
        },
    },
    "dense_backward_bf16": {
        "pos": [("dy", "f32:n,m"), ("x", "f32:n,k"), ("w", "bw:k,m")],
        "kw": {
            "y": "f32:n,m",
            "preact": "f32:n,m",
            "activation": "act",
            "alpha": "alpha",
            "need_dx": "bool",
            "need_dw": "bool",
            "need_db": "bool",
            "dx_out": "f32:n,k",
            "dw_out": "f32:k,m",
            "db_out": "f32:m",
            "accumulate": "bool",
            "num_threads": "threads",
        },
    },
    "dense_forward_int8": {
        "pos": [("x", "f32:n,k"), ("w", "qw:k,m"), ("b", "f32:m")],
        "kw": {"activation": "act", "alpha": "alpha", "out": "f32:n,m", "num_threads": "threads"},
    },
    "feature_moments": {
        "pos": [("x", "n,k")],
        "kw": {"mean_out": "k", "variance_out": "k", "num_threads": "threads"},
    },
    "batch_norm_forward": {
        "pos": [
            ("x", "n,k"),
            ("gamma", "k"),
            ("beta", "k"),
            ("moving_mean", "k"),
            ("moving_variance", "k"),
        ],
        "kw": {
            "training": "bool",
            "epsilon": "real",
            "out": "n,k",
            "mean_out": "k",
            "variance_out": "k",
            "num_threads": "threads",
        },
    },
    "batch_norm_backward": {
        "pos": [("dy", "n,k"), ("x", "n,k"), ("gamma", "k"), ("mean", "k"), ("variance", "k")],
        "kw": {
            "training": "bool",
            "epsilon": "real",
            "need_dx": "bool",
            "need_dgamma": "bool",
            "need_dbeta": "bool",
            "dx_out": "n,k",
            "dgamma_out": "k",
            "dbeta_out": "k",
            "num_threads": "threads",
        },
    },
    "batch_norm_update_moving": {
        "pos": [("moving_mean", "k"), ("moving_variance", "k"), ("mean", "k"), ("variance", "k")],
        "kw": {"momentum": "real"},
    },
    "layer_norm_forward": {
        "pos": [("x", "n,k"), ("gamma", "k"), ("beta", "k")],
        "kw": {
            "epsilon": "real",
            "out": "n,k",
            "mean_out": "n",
            "inv_std_out": "n",
            "num_threads": "threads",
        },
    },
    "layer_norm_backward": {
        "pos": [("dy", "n,k"), ("x", "n,k"), ("gamma", "k"), ("mean", "n"), ("inv_std", "n")],
        "kw": {
            "need_dx": "bool",
            "need_dgamma": "bool",
            "need_dbeta": "bool",
            "dx_out": "n,k",
            "dgamma_out": "k",
            "dbeta_out": "k",
            "num_threads": "threads",
        },
    },
    "normalization_forward": {
        "pos": [("x", "n,k"), ("mean", "k"), ("variance", "k")],
        "kw": {"invert": "bool", "out": "n,k", "num_threads": "threads"},
    },
    "normalization_backward": {
        "pos": [("dy", "n,k"), ("variance", "k")],
        "kw": {"invert": "bool", "out": "n,k", "num_threads": "threads"},
    },
}
DIMS = (0, 1, 2, 3, 5, 7, 13, 16, 17, 31, 64, 97)
REALS = (0.0, 0.1, 0.9, 1.0, -0.5, 1e-8, 1e300, float("nan"), float("inf"), 2**64)
MAX_ELEMENTS = 1 << 16


@st.composite
def well_formed(draw, name: str):
    """A call of `name` that its checks should accept, or nearly (huge zero-size extents)."""
    spec = SPECS[name]
    dims: dict[str, int] = {}
    huge = draw(st.integers(0, 5)) == 0
    dtype = draw(st.sampled_from(("float32", "float64")))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def dim(symbol):
        if symbol not in dims:
            dims[symbol] = draw(st.sampled_from(DIMS))
            if huge and dims[symbol] != 0 and draw(st.booleans()):
                dims[symbol] = draw(st.sampled_from(HUGE))
        return dims[symbol]

    def value(kind):
        if kind == "act":
            return draw(st.sampled_from(_core.ACTIVATIONS))
        if kind == "alpha":
            return draw(st.sampled_from((None, None, 0.1, -1.0, float("nan"), 2**64)))
        if kind == "threads":
            return draw(st.sampled_from((None, 1, 2, 3, 7)))
        if kind == "bool":
            return draw(st.booleans())
        if kind == "real":
            return draw(st.sampled_from(REALS[:4]))
        if kind == "step":
            return draw(st.integers(1, 5))
        if kind == "reduction":
            return draw(st.sampled_from(("mean", "sum", "none")))
        if kind == "convention":
            return draw(st.sampled_from(("torch", "keras")))
        if kind == "shape":  # up to 3 extents, huge ones among them in a huge call
            return tuple(dim(f"shape{i}") for i in range(draw(st.integers(0, 3))))
        if kind == "dtype":
            return draw(st.sampled_from(DTYPES))
        if kind == "out_dtype":
            return draw(st.sampled_from(("float32", "bfloat16")))
        if kind.startswith("qw:"):
            w = value("f32:" + kind[3:])
            try:  # huge zero-size weights are refused here already: pass the array instead
                return _core.QuantizedWeights.quantize(w)
            except ACCEPTED:
                return w
        if kind.startswith("bw:"):
            w = value("f32:" + kind[3:])
            try:
                return _core.Bf16Weights(w, transposed=draw(st.booleans()))
            except ACCEPTED:
                return w
        if kind.startswith(("bf16:", "f32:")):
            head, _, rest = kind.partition(":")
            x = value(rest)
            if head == "f32" or ml_dtypes is None:
                return x.astype(np.float32)
            return x.astype(np.float32).astype(ml_dtypes.bfloat16)
        if kind.startswith("sorted:"):  # ascending values (thresholds)
            return np.sort(value(kind[7:]))
        if kind.startswith("list:"):
            return [value(kind[5:]) for _ in range(draw(st.integers(0, 3)))]
        labels = kind.startswith("labels:")
        symbols = kind[7:].split(",")[:1] if labels else kind.split(",")
        shape = [dim(symbol) for symbol in symbols]
        if int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
            shape = [min(d, 3) if d in HUGE else d for d in shape]
        if 0 in shape:  # an empty array of any extents NumPy allows
            try:
                return np.empty(shape, np.int64 if labels else dtype)
            except ValueError:
                shape = [min(d, 2**20) for d in shape]
        if labels:
            classes = dim(kind[7:].split(",")[1])
            return rng.integers(0, max(min(classes, 2**31), 1), shape).astype(np.int64)
        return (rng.standard_normal(shape) * 2).astype(dtype)

    args = [value(kind) for _, kind in spec["pos"]]
    kwargs = {key: value(kind) for key, kind in spec["kw"].items() if draw(st.booleans())}
    return args, kwargs


@st.composite
def calls(draw):
    names = sorted({*FUNCTIONS, *SPECS} & {*SPECS, "DenseChain", "set_num_threads"})
    name = draw(st.sampled_from(names))
    if name == "DenseChain":
        return draw(chains())
    if name == "set_num_threads":
        return name, [draw(st.sampled_from(SCALARS))], {}
    args, kwargs = draw(well_formed(name))
    # Mutations: replace an argument by anything, alias an output with an input, change a
    # dtype or layout, break a shape, poison values.
    for _ in range(draw(st.sampled_from((0, 0, 1, 1, 2)))):
        slots = [("pos", i) for i in range(len(args))] + [("kw", key) for key in kwargs]
        slots += [("kw", key) for key in SPECS[name]["kw"] if key not in kwargs]
        where, key = draw(st.sampled_from(slots))
        current = args[key] if where == "pos" else kwargs.get(key)
        arrays_here = [a for a in [*args, *kwargs.values()] if isinstance(a, np.ndarray)]
        how = draw(st.sampled_from(("any", "alias", "dtype", "layout", "shape", "poison")))
        if how == "any":
            new = values_for(draw, arrays_here, str(key))
        elif how == "alias" and arrays_here:
            new = draw(st.sampled_from(arrays_here))
            if new.ndim >= 1 and new.shape[-1] > 1 and draw(st.booleans()):
                new = new[..., 1:]  # a shifted view: overlapping, not identical
        elif isinstance(current, np.ndarray):
            new = current.copy()
            if how == "dtype":
                new = new.astype(draw(st.sampled_from(DTYPES[:7])))
            elif how == "layout":
                new = draw(st.sampled_from((np.asfortranarray(new), new.T)))
                if draw(st.booleans()):
                    new = np.require(new, requirements="C")
                    new.setflags(write=False)
            elif how == "shape" and new.ndim >= 1:
                shape = (*new.shape[:-1], new.shape[-1] + 1)
                if 0 in shape:
                    with contextlib.suppress(ValueError):  # extents NumPy refuses
                        new = np.empty(shape, new.dtype)
                elif int(np.prod(shape, dtype=object)) <= MAX_ELEMENTS:
                    new = np.resize(new, shape)
            elif how == "poison" and new.size:
                flat = new.reshape(-1)
                poison = (np.nan, np.inf, -np.inf) if new.dtype.kind == "f" else ()
                value = draw(st.sampled_from((*poison, 10**6, -1)))
                # an out-of-range integer wraps as a cast would (NumPy 2 refuses the assignment)
                flat[draw(st.integers(0, flat.size - 1))] = np.array(value).astype(new.dtype)
        else:
            new = draw(st.sampled_from(SCALARS))
        if where == "pos":
            args[key] = new
        else:
            kwargs[key] = new
    return name, args, kwargs


@st.composite
def chains(draw):
    """DenseChain: widths chained (sometimes broken), then called on an input."""
    widths = [draw(st.sampled_from(DIMS)) for _ in range(draw(st.integers(1, 4)))]
    huge = draw(st.integers(0, 4)) == 0
    if huge:  # the segfault of 2**33 rows through zero-width layers of 2**32 outputs
        widths = [0, 2**32, 0][: max(len(widths), 2)]
    dtype = draw(st.sampled_from(("float32", "float64")))
    steps = []
    for k, m in zip(widths, widths[1:]):
        w = np.empty((k, m), dtype) if k * m == 0 else np.full((k, m), 0.1, dtype)
        low = draw(st.sampled_from((None, None, "int8", "bf16")))
        if low is not None:  # an int8 or bf16 step (float32 chains; float64 ones refuse it)
            try:
                f32 = w.astype(np.float32)
                w = (
                    _core.QuantizedWeights.quantize(f32)
                    if low == "int8"
                    else _core.Bf16Weights(f32, transposed=False)
                )
            except ACCEPTED:
                pass
        b = None if m > MAX_ELEMENTS or draw(st.booleans()) else np.zeros(m, dtype)
        step = [w, b, draw(st.sampled_from(ACTIVATION_NAMES))]
        if draw(st.booleans()):
            step.append(draw(st.sampled_from((None, 0.1, 2**64, float("nan")))))
        steps.append(tuple(step))
    if draw(st.booleans()):
        steps.append((None, None, draw(st.sampled_from(ACTIVATION_NAMES))))
    if draw(st.integers(0, 4)) == 0 and steps:
        steps[draw(st.integers(0, len(steps) - 1))] = draw(st.sampled_from(SCALARS))
    rows = 2**33 if huge else draw(st.sampled_from(DIMS))
    first = widths[0]
    x = np.empty((rows, first), dtype) if rows * first == 0 else np.ones((rows, first), dtype)
    if draw(st.integers(0, 4)) == 0:
        x = draw(arrays())
    threads = draw(st.sampled_from((None, 1, 3, 2**40, 2**64, 0, -1, "2")))
    return "DenseChain", [steps], {"__call__": ([x], {"num_threads": threads})}


OUTCOMES: dict[str, dict[str, int]] = {}


def check(name: str, args: list, kwargs: dict) -> None:
    """Runs one call; only a result or an accepted exception with a message may come back."""
    fn = getattr(_core, name)
    then = kwargs.pop("__call__", None)
    outcome = "returned"
    try:
        result = fn(*args, **kwargs)
        if then is not None:
            result(*then[0], **then[1])
    except ACCEPTED as error:
        assert str(error), f"{name}: {type(error).__name__} without a message"
        outcome = type(error).__name__
    finally:
        counts = OUTCOMES.setdefault(name, {})
        counts[outcome] = counts.get(outcome, 0) + 1
        _core.set_num_threads(None)


def run(examples: int, seed_value: int | None) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed_value is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(calls())
    def fuzz(call):
        name, args, kwargs = call
        check(name, args, dict(kwargs))

    if seed_value is not None:
        fuzz = seed(seed_value)(fuzz)
    fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None, help="default: derandomized")
    parser.add_argument(
        "--memory-gib",
        type=float,
        default=8.0,
        help="address-space limit; 0: none (under ASan, whose shadow memory needs terabytes of "
        "address space: there ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=N "
        "bounds each allocation instead, see tools/sanitize.sh)",
    )
    args = parser.parse_args()
    if args.memory_gib > 0:
        limit = int(args.memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    run(args.examples, args.seed)
    for name, counts in sorted(OUTCOMES.items()):
        print(f"  {name:<30} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"fuzz_bindings: {args.examples} calls over {len(FUNCTIONS)} functions, no failure")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
