"""Tests of the loss kernels, parametrised over the LOSSES registry: a loss added there (with a
line in PARAMETERS and TARGET_KINDS) gets every test below.

Tolerances: losses are compared with the float64 reference in reference_losses.py to a
relative 1e-5 (float32 inputs) or 1e-12 (float64) of the loss's scale (the same reduction of
|w_i| (|l_i| + 1 + the row's largest input magnitude)); gradients to the same relative
tolerance of the largest reference gradient entry plus the per-row gradient scale.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import densekit
from densekit import _core, kernels

from .helpers import json_of_child
from .reference_losses import reference_loss

LOSSES = kernels.LOSSES
SOFTMAX = "softmax_cross_entropy"
ELEMENTWISE = tuple(name for name in LOSSES if name != SOFTMAX)
REDUCTIONS = ("mean", "sum", "none")
DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

# Loss parameters each loss is tested with, and the kinds of target it accepts.
PARAMETERS = {
    "mse": ({},),
    "mae": ({},),
    "huber": ({}, {"delta": 0.25}, {"delta": 3.0}),
    "softmax_cross_entropy": ({}, {"label_smoothing": 0.1}, {"label_smoothing": 1.0}),
    "sigmoid_binary_cross_entropy": ({}, {"label_smoothing": 0.2}),
    "mape": ({},),
    "msle": ({},),
    "log_cosh": ({},),
    "poisson": ({},),
    "kl_divergence": ({},),
    "hinge": ({},),
    "squared_hinge": ({},),
    "categorical_hinge": ({},),
    "cosine_similarity": ({},),
    "sigmoid_focal_cross_entropy": (
        {},
        {"gamma": 0.0},
        {"gamma": 1.5, "alpha": 0.3, "apply_class_balancing": True, "label_smoothing": 0.1},
    ),
    "softmax_focal_cross_entropy": (
        {},
        {"gamma": 0.0, "alpha": 1.0},
        {"gamma": 1.5, "alpha": 0.3, "label_smoothing": 0.1},
    ),
}
TARGET_KINDS = {
    "mse": ("real",),
    "mae": ("real",),
    "huber": ("real",),
    "softmax_cross_entropy": ("int32", "int64", "probabilities", "one_hot"),
    "sigmoid_binary_cross_entropy": ("binary", "probabilities"),
    "mape": ("real",),
    "msle": ("real",),
    "log_cosh": ("real",),
    "poisson": ("real",),
    "kl_divergence": ("probabilities",),
    "hinge": ("signs",),
    "squared_hinge": ("signs",),
    "categorical_hinge": ("one_hot", "probabilities"),
    "cosine_similarity": ("real",),
    "sigmoid_focal_cross_entropy": ("binary", "probabilities"),
    "softmax_focal_cross_entropy": ("one_hot", "probabilities"),
}
# Losses whose predictions are drawn non-negative (poisson takes a log of them; kl_divergence
# clips them to [1e-7, 1]).
NON_NEGATIVE_PREDICTIONS = ("poisson", "kl_divergence")
# Sample counts: empty, tiny, primes and sizes that are not multiples of 8 or 16.
SIZES = (0, 1, 2, 3, 5, 7, 8, 13, 17, 31, 33, 64, 127, 257)
HYPOTHESIS = settings(max_examples=30, deadline=None)


def loss_function(name):
    return getattr(kernels, name)


def make_target(name, rng, prediction, kind, dtype):
    shape = prediction.shape
    if kind == "real":
        return (prediction + rng.standard_normal(shape) * np.abs(prediction).max(initial=1)).astype(
            dtype
        )
    if kind == "binary":
        return rng.integers(0, 2, shape).astype(dtype)
    if kind == "signs":
        return (2 * rng.integers(0, 2, shape) - 1).astype(dtype)
    n, classes = shape[0], (shape[1] if len(shape) == 2 else 1)
    if kind in ("int32", "int64"):
        return rng.integers(0, classes, n).astype(kind)
    if kind == "one_hot":
        return np.eye(classes, dtype=dtype)[rng.integers(0, classes, n)].reshape(shape)
    probabilities = rng.random(shape)
    if name == SOFTMAX:
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities.astype(dtype)


@dataclass
class Problem:
    name: str
    prediction: np.ndarray
    target: np.ndarray
    reduction: str
    sample_weight: np.ndarray | None
    params: dict

    def kwargs(self):
        return {"reduction": self.reduction, "sample_weight": self.sample_weight, **self.params}

    def run(self, **extra):
        return loss_function(self.name)(self.prediction, self.target, **self.kwargs(), **extra)

    def reference(self):
        return reference_loss(self.name, self.prediction, self.target, **self.kwargs())


def build_problem(
    name,
    *,
    n,
    cols,
    dtype,
    seed,
    scale=1.0,
    kind=None,
    reduction="mean",
    weighted=False,
    params=None,
):
    """A problem of n rows (cols per row, or 1-D when None); kind defaults to the loss's first
    target kind."""
    kind = TARGET_KINDS[name][0] if kind is None else kind
    params = {} if params is None else params
    rng = np.random.default_rng(seed)
    shape = (n,) if cols is None else (n, cols)
    prediction = (rng.standard_normal(shape) * scale).astype(dtype)
    if name in NON_NEGATIVE_PREDICTIONS:
        prediction = np.abs(prediction)
    target = make_target(name, rng, prediction, kind, dtype)
    sample_weight = rng.uniform(0.0, 2.0, n).astype(dtype) if weighted else None
    return Problem(name, prediction, target, reduction, sample_weight, dict(params))


@st.composite
def problems(draw, name, scales=(1.0, 30.0, 1e4), sizes=SIZES, max_cols=70):
    if name == SOFTMAX:
        cols = draw(st.integers(1, max_cols))
    else:
        cols = draw(st.one_of(st.none(), st.integers(1, max_cols)))
    return build_problem(
        name,
        n=draw(st.sampled_from(sizes)),
        cols=cols,
        dtype=draw(st.sampled_from(DTYPES)),
        scale=draw(st.sampled_from(scales)),
        kind=draw(st.sampled_from(TARGET_KINDS[name])),
        reduction=draw(st.sampled_from(REDUCTIONS)),
        weighted=draw(st.booleans()),
        params=draw(st.sampled_from(PARAMETERS[name])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def sample_scales(problem):
    """|w_i| (|l_i| + 1 + largest |input| in row i): what a loss's rounding is judged against."""
    losses, _ = reference_loss(
        problem.name, problem.prediction, problem.target, reduction="none", **problem.params
    )
    n = problem.prediction.shape[0]
    width = int(np.prod(problem.prediction.shape[1:]))
    rows = problem.prediction.reshape(n, width).astype(np.float64)
    magnitude = np.abs(rows).max(axis=1, initial=0.0)
    if problem.target.dtype.kind == "f":
        target_rows = problem.target.reshape(n, width).astype(np.float64)
        magnitude = np.maximum(magnitude, np.abs(target_rows).max(axis=1, initial=0.0))
    w = np.ones(n) if problem.sample_weight is None else np.abs(problem.sample_weight)
    return w * (np.abs(losses) + 1.0 + magnitude)


def assert_close_to_reference(problem, loss, grad, rtol=None, reference=None):
    dtype = problem.prediction.dtype.type
    rtol = RTOL[dtype] if rtol is None else rtol
    ref_loss, ref_grad = problem.reference() if reference is None else reference
    n = problem.prediction.shape[0]
    scales = sample_scales(problem)
    if problem.reduction == "none":
        assert isinstance(loss, np.ndarray)
        assert loss.dtype == problem.prediction.dtype
        assert loss.shape == (n,)
        np.testing.assert_array_less(np.abs(loss - ref_loss), rtol * scales + 1e-300)
    else:
        assert type(loss) is float
        scale = scales.sum() / (n if problem.reduction == "mean" and n else 1)
        assert abs(loss - ref_loss) <= rtol * scale, (loss, ref_loss)
    assert isinstance(grad, np.ndarray)
    assert grad.dtype == problem.prediction.dtype
    assert grad.shape == problem.prediction.shape
    w = np.ones(n) if problem.sample_weight is None else problem.sample_weight.astype(np.float64)
    per_row = np.abs(w).max(initial=0.0) / (n if problem.reduction == "mean" and n else 1)
    atol = rtol * (np.abs(ref_grad).max(initial=0.0) + per_row)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=atol)


# ---- Values and gradients against the float64 reference ----


@pytest.mark.parametrize("name", LOSSES)
@HYPOTHESIS
@given(data=st.data())
def test_matches_reference(name, data):
    problem = data.draw(problems(name))
    loss, grad = problem.run()
    assert_close_to_reference(problem, loss, grad)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(name, reduction, dtype):
    cols = 4 if name == SOFTMAX else 3
    problem = build_problem(
        name,
        n=0,
        cols=cols,
        dtype=dtype,
        reduction=reduction,
        weighted=True,
        seed=0,
    )
    loss, grad = problem.run()
    if reduction == "none":
        assert loss.shape == (0,)
        assert loss.dtype == dtype
    else:
        assert loss == 0.0
        assert type(loss) is float
    assert grad.shape == (0, cols)
    assert grad.dtype == dtype


@pytest.mark.parametrize("name", LOSSES)
def test_no_columns_gives_zero_loss(name):
    # A row of no elements (or no classes) has an empty mean (sum): loss 0, an empty gradient.
    prediction, target = np.zeros((3, 0)), np.zeros((3, 0))
    loss, grad = loss_function(name)(prediction, target)
    assert loss == 0.0
    assert grad.shape == (3, 0)
    per_sample, _ = loss_function(name)(prediction, target, reduction="none")
    np.testing.assert_array_equal(per_sample, np.zeros(3))


# ---- Gradient by central finite differences (float64) ----


def near_kink(problem):
    """Whether a prediction lies within 1e-3 of where its loss is not differentiable: mae and
    mape at e = 0, huber at |e| = delta, the hinges at a margin of 0 (categorical_hinge also
    where two candidates for its maximum tie), kl_divergence at its clip's ends, msle at 1e-7
    (and poisson near 0, where finite differences lose their accuracy)."""
    p, t = problem.prediction, problem.target
    close = lambda a, b: bool(np.any(np.abs(a - b) < 1e-3))  # noqa: E731
    if problem.name == "mae":
        return close(p, t)
    if problem.name == "mape":  # and where 100 / |t| is so large that differences lose digits
        return close(p, t) or bool(np.any(np.abs(t) < 0.1))
    if problem.name == "huber":
        return close(np.abs(p - t), problem.params.get("delta", 1.0))
    if problem.name == "hinge":
        return close(t * p, 1.0)
    if problem.name == "kl_divergence":
        return close(p, 1.0) or close(p, 1e-7)
    if problem.name == "msle":
        return close(p, 1e-7)
    if problem.name == "poisson":  # not a kink: t log(p) curves too fast for h = 1e-6 near 0
        return bool(np.any(p < 0.05))
    if problem.name == "categorical_hinge" and p.size:
        rows_p, rows_t = p.reshape(p.shape[0], -1), t.reshape(p.shape[0], -1)
        candidates = np.sort((1.0 - rows_t) * rows_p, axis=1)
        margin = candidates[:, -1] - (rows_t * rows_p).sum(axis=1) + 1.0
        tie = candidates.shape[1] > 1 and close(candidates[:, -1], candidates[:, -2])
        return tie or close(margin, 0.0)
    return False


@pytest.mark.parametrize("name", LOSSES)
@HYPOTHESIS
@given(data=st.data())
def test_gradient_by_finite_differences(name, data):
    problem = data.draw(problems(name, scales=(1.0, 3.0), sizes=(0, 1, 2, 3, 5), max_cols=5))
    problem.prediction = problem.prediction.astype(np.float64)
    if problem.target.dtype.kind == "f":
        problem.target = problem.target.astype(np.float64)
    if problem.sample_weight is not None:
        problem.sample_weight = problem.sample_weight.astype(np.float64)
    assume(not near_kink(problem))

    def total_loss(prediction):
        loss, _ = loss_function(name)(
            prediction, problem.target, compute_grad=False, **problem.kwargs()
        )
        return float(np.sum(loss))  # "none": the sum of the per-sample losses

    _, grad = problem.run()
    h = 1e-6
    numeric = np.zeros_like(problem.prediction)
    for index in np.ndindex(problem.prediction.shape):
        up, down = problem.prediction.copy(), problem.prediction.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (total_loss(up) - total_loss(down)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


# ---- Fused versus value-only, grad_out, read-only inputs ----


@pytest.mark.parametrize("name", LOSSES)
@HYPOTHESIS
@given(data=st.data())
def test_fused_loss_equals_value_only(name, data):
    problem = data.draw(problems(name))
    fused, _ = problem.run(compute_grad=True)
    value_only, no_grad = problem.run(compute_grad=False)
    assert no_grad is None
    np.testing.assert_array_equal(np.asarray(fused), np.asarray(value_only), strict=True)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_out_is_filled_and_returned(name, reduction, dtype):
    problem = build_problem(
        name,
        n=37,
        cols=11,
        dtype=dtype,
        scale=2.0,
        kind=TARGET_KINDS[name][-1],
        reduction=reduction,
        weighted=True,
        params=PARAMETERS[name][-1],
        seed=1,
    )
    expected_loss, expected_grad = problem.run()
    grad_out = np.full(problem.prediction.shape, np.nan, dtype=dtype)
    loss, grad = problem.run(grad_out=grad_out)
    assert grad is grad_out
    assert np.shares_memory(grad, grad_out)
    np.testing.assert_array_equal(grad_out, expected_grad, strict=True)
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(expected_loss), strict=True)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_read_only_inputs_are_accepted(name, weighted):
    problem = build_problem(
        name,
        n=19,
        cols=6,
        dtype=np.float64,
        weighted=weighted,
        seed=2,
    )
    expected = problem.run()
    for array in (problem.prediction, problem.target, problem.sample_weight):
        if array is not None:
            array.flags.writeable = False
    loss, grad = problem.run()
    assert loss == expected[0]
    np.testing.assert_array_equal(grad, expected[1])


@pytest.mark.parametrize("name", LOSSES)
def test_nan_is_data(name):
    problem = build_problem(
        name,
        n=4,
        cols=3,
        dtype=np.float64,
        kind=TARGET_KINDS[name][-1],
        reduction="none",
        seed=3,
    )
    problem.prediction[1, 2] = np.nan
    per_sample, grad = problem.run()
    assert np.isnan(per_sample[1])
    assert np.all(np.isfinite(per_sample[[0, 2, 3]]))
    assert np.all(np.isfinite(grad[[0, 2, 3]]))
    loss, _ = loss_function(name)(problem.prediction, problem.target)
    assert np.isnan(loss)


# ---- Against torch ----


def keras_formula(torch, name, p, t, params):
    """Keras 3's definition of a loss written with torch operations (autograd gives the
    gradient): elementwise values, or per-sample values of the row losses."""
    eps = 1e-7
    if name == "mape":
        return 100.0 * torch.abs((t - p) / torch.clamp(torch.abs(t), min=eps))
    if name == "msle":
        return (torch.log1p(torch.clamp(p, min=eps)) - torch.log1p(torch.clamp(t, min=eps))) ** 2
    if name == "log_cosh":
        x = p - t
        # softplus through logaddexp: torch's softplus turns linear beyond 20, 2e-9 off.
        return x + torch.logaddexp(torch.zeros_like(x), -2.0 * x) - np.log(2.0)
    if name == "poisson":
        return p - t * torch.log(p + eps)
    if name == "kl_divergence":
        tc, pc = torch.clamp(t, eps, 1.0), torch.clamp(p, eps, 1.0)
        return tc * torch.log(tc / pc)
    if name in ("hinge", "squared_hinge"):
        m = torch.relu(1.0 - t * p)
        return m if name == "hinge" else m * m
    if name == "sigmoid_focal_cross_entropy":
        ls = params.get("label_smoothing", 0.0)
        alpha, gamma = params.get("alpha", 0.25), params.get("gamma", 2.0)
        t = t * (1 - ls) + 0.5 * ls
        bce = torch.nn.functional.binary_cross_entropy_with_logits(p, t, reduction="none")
        s, s_low = torch.sigmoid(p), torch.sigmoid(-p)
        q = t * s_low + (1 - t) * s
        focal = q**gamma * bce
        if params.get("apply_class_balancing"):
            focal = (t * alpha + (1 - t) * (1 - alpha)) * focal
        return focal
    rows_p = p if p.ndim == 2 else p[:, None]
    rows_t = t if t.ndim == 2 else t[:, None]
    if name == "softmax_focal_cross_entropy":
        ls = params.get("label_smoothing", 0.0)
        alpha, gamma = params.get("alpha", 0.25), params.get("gamma", 2.0)
        rows_t = rows_t * (1 - ls) + ls / rows_p.shape[1]
        log_p = torch.log_softmax(rows_p, dim=1)
        return (alpha * rows_t * (1 - log_p.exp()) ** gamma * -log_p).sum(dim=1)
    if name == "categorical_hinge":
        pos = (rows_t * rows_p).sum(dim=1)
        neg = ((1.0 - rows_t) * rows_p).max(dim=1).values
        return torch.relu(neg - pos + 1.0)
    if name == "cosine_similarity":

        def normalize(x):
            return x * torch.clamp(torch.rsqrt((x * x).sum(dim=1, keepdim=True)), max=1 / eps)

        return -(normalize(rows_t) * normalize(rows_p)).sum(dim=1)
    raise ValueError(name)


def torch_loss(problem):
    """(loss, grad) built from torch.nn.functional with autograd; weights applied to the
    per-sample losses, as Keras does."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    name, params = problem.name, problem.params
    prediction, target_values = problem.prediction, problem.target
    if name == "cosine_similarity":
        # The normalisation's gradient divides float32 rounding by |p|: torch's float32 result
        # is noise where a row's norm is tiny (the kernel computes in double), so compare with
        # torch in float64.
        prediction, target_values = prediction.astype(np.float64), target_values.astype(np.float64)
    z = torch.tensor(prediction, requires_grad=True)
    if target_values.dtype.kind == "i":
        target = torch.from_numpy(target_values.astype(np.int64))
    else:
        target = torch.from_numpy(target_values)
    if name == SOFTMAX:
        ls = params.get("label_smoothing", 0.0)
        per_sample = functional.cross_entropy(z, target, reduction="none", label_smoothing=ls)
    else:
        if name == "mse":
            elementwise = functional.mse_loss(z, target, reduction="none")
        elif name == "mae":
            elementwise = functional.l1_loss(z, target, reduction="none")
        elif name == "huber":
            delta = params.get("delta", 1.0)
            elementwise = functional.huber_loss(z, target, reduction="none", delta=delta)
        elif name == "sigmoid_binary_cross_entropy":
            ls = params.get("label_smoothing", 0.0)
            smoothed = target * (1 - ls) + 0.5 * ls
            elementwise = functional.binary_cross_entropy_with_logits(z, smoothed, reduction="none")
        else:
            elementwise = keras_formula(torch, name, z, target, params)
        if name in ("categorical_hinge", "cosine_similarity", "softmax_focal_cross_entropy"):
            per_sample = elementwise
        elif name == "kl_divergence":
            per_sample = elementwise if z.ndim == 1 else elementwise.sum(dim=1)
        else:
            per_sample = elementwise if z.ndim == 1 else elementwise.mean(dim=1)
    if problem.sample_weight is not None:
        per_sample = per_sample * torch.from_numpy(problem.sample_weight)
    if problem.reduction == "none":
        value, total = per_sample, per_sample.sum()
    else:
        total = per_sample.sum()
        if problem.reduction == "mean":
            total = total / max(len(per_sample), 1)
        value = total
    total.backward()
    value = value.detach().double().numpy() if problem.reduction == "none" else total.item()
    return value, z.grad.double().numpy()


@pytest.mark.parametrize("name", LOSSES)
@HYPOTHESIS
@given(data=st.data())
def test_matches_torch(name, data):
    problem = data.draw(problems(name, scales=(1.0, 30.0), sizes=(1, 2, 7, 33, 64)))
    loss, grad = problem.run()
    # torch computes in the inputs' dtype; allow it ten times the reference tolerance.
    rtol = 10 * RTOL[problem.prediction.dtype.type]
    assert_close_to_reference(problem, loss, grad, rtol=rtol, reference=torch_loss(problem))


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_reductions_agree_unweighted(dtype):
    """Without weights, torch's own 'mean' over all elements equals the Keras mean."""
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(4)
    z = rng.standard_normal((9, 5)).astype(dtype)
    t = rng.standard_normal((9, 5)).astype(dtype)
    labels = rng.integers(0, 5, 9)
    tz, tt = torch.from_numpy(z), torch.from_numpy(t)
    rtol = 10 * RTOL[dtype]
    checks = [
        (kernels.mse(z, t)[0], functional.mse_loss(tz, tt)),
        (kernels.mae(z, t)[0], functional.l1_loss(tz, tt)),
        (kernels.huber(z, t, delta=0.5)[0], functional.huber_loss(tz, tt, delta=0.5)),
        (
            kernels.softmax_cross_entropy(z, labels, label_smoothing=0.2)[0],
            functional.cross_entropy(tz, torch.from_numpy(labels), label_smoothing=0.2),
        ),
        (
            kernels.sigmoid_binary_cross_entropy(z, (t > 0).astype(dtype))[0],
            functional.binary_cross_entropy_with_logits(tz, (tt > 0).to(tz.dtype)),
        ),
    ]
    for ours, theirs in checks:
        assert ours == pytest.approx(theirs.item(), rel=rtol, abs=rtol)


# ---- Numerical stability ----


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_huge_logits(dtype, smoothing):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    labels = np.array([0, 0, 2, 1])
    per_sample, grad = kernels.softmax_cross_entropy(
        z.astype(dtype), labels, reduction="none", label_smoothing=smoothing
    )
    assert np.all(np.isfinite(per_sample))
    assert np.all(np.isfinite(grad))
    ref_loss, ref_grad = reference_loss(
        SOFTMAX, z, labels, reduction="none", label_smoothing=smoothing
    )
    if smoothing == 0.0:
        np.testing.assert_allclose(ref_loss, [0.0, 2e4, 2e4 + np.log(2), np.log(3)])
    np.testing.assert_allclose(per_sample, ref_loss, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(grad, ref_grad, rtol=RTOL[dtype], atol=RTOL[dtype])
    probabilities = np.eye(3, dtype=dtype)[labels]
    per_sample_p, grad_p = kernels.softmax_cross_entropy(
        z.astype(dtype), probabilities, reduction="none", label_smoothing=smoothing
    )
    np.testing.assert_array_equal(per_sample_p, per_sample)
    np.testing.assert_allclose(grad_p, grad, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_cross_entropy_huge_logits(dtype):
    z = np.array([1e4, -1e4, 1e4, -1e4, 0.0], dtype=dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype)
    per_sample, grad = kernels.sigmoid_binary_cross_entropy(z, t, reduction="none")
    np.testing.assert_allclose(per_sample, [0.0, 0.0, 1e4, 1e4, np.log(2)], rtol=RTOL[dtype])
    np.testing.assert_allclose(grad, [0.0, 0.0, 1.0, -1.0, -0.5], rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_cross_entropy_accuracy_across_logits(dtype):
    # Every regime of the kernel's own exp and log1p: exp(-|z|) from 1 down to underflow.
    z = np.linspace(-120, 120, 200_003).astype(dtype)
    tolerance = {np.float32: 5e-7, np.float64: 1e-15}[dtype]
    for value in (0.0, 1.0, 0.3):
        target = np.full_like(z, value)
        per_sample, grad = kernels.sigmoid_binary_cross_entropy(z, target, reduction="none")
        ref_loss, ref_grad = reference_loss(
            "sigmoid_binary_cross_entropy", z, target, reduction="none"
        )
        np.testing.assert_array_less(np.abs(per_sample - ref_loss), tolerance * (1 + np.abs(z)))
        np.testing.assert_array_less(np.abs(grad - ref_grad), tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spread", [1.0, 30.0, 100.0, 800.0, 1e4])
def test_softmax_cross_entropy_accuracy_across_logits(dtype, spread):
    # Rows whose exponentials span every range down to underflow, labels at both ends.
    z = np.stack(
        [
            np.linspace(-spread, 0, 1001),
            np.linspace(0, spread, 1001),
            np.linspace(-spread, spread, 1001),
        ]
    ).astype(dtype)
    labels = np.array([0, 500, 1000])
    tolerance = {np.float32: 1e-6, np.float64: 1e-12}[dtype]
    grad_tolerance = {np.float32: 1e-7, np.float64: 1e-15}[dtype]
    per_sample, grad = kernels.softmax_cross_entropy(z, labels, reduction="none")
    ref_loss, ref_grad = reference_loss(SOFTMAX, z, labels, reduction="none")
    np.testing.assert_array_less(np.abs(per_sample - ref_loss), tolerance * (1 + np.abs(ref_loss)))
    np.testing.assert_array_less(np.abs(grad - ref_grad), grad_tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_masked_logits(dtype):
    # -inf logits (masked classes) have probability 0: finite loss, zero gradient there.
    z = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], dtype=dtype)
    labels = np.array([0, 1])
    per_sample, grad = kernels.softmax_cross_entropy(z, labels, reduction="none")
    np.testing.assert_allclose(per_sample, [np.log1p(np.e), 0.0], rtol=RTOL[dtype])
    assert grad[0, 1] == 0.0
    np.testing.assert_array_equal(grad[1], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["labels", "probabilities"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_long_rows(dtype, kind, smoothing):
    # Rows longer than two blocks of 256 take the online sweep (running maximum, sums
    # rescaled as it grows, blocks rescaled in the gradient sweep): the maximum growing in
    # every block or only in the last, leading blocks all -inf (masked), a -inf row tail,
    # widths that are not multiples of a block; bitwise the same on 1 and 2 threads.
    rng = np.random.default_rng(8)
    for c in (513, 1000, 2049):
        z = rng.standard_normal((8, c)) * 3
        z[1] = np.linspace(-50, 50, c)  # grows in every block
        z[2, -1] = 40.0  # grows in the last block only
        masked = c // 2 + 40
        z[3, :masked] = -np.inf  # masked leading blocks
        z[4, 300:] = -np.inf
        z[5] *= 300
        z = z.astype(dtype)
        labels = rng.integers(0, c, 8)
        labels[3] = c - 2
        labels[4] = 5
        target = labels if kind == "labels" else np.eye(c, dtype=dtype)[labels]
        results = [
            kernels.softmax_cross_entropy(
                z, target, reduction="none", label_smoothing=smoothing, num_threads=threads
            )
            for threads in (1, 2)
        ]
        assert results[0][0].tobytes() == results[1][0].tobytes()
        assert results[0][1].tobytes() == results[1][1].tobytes()
        per_sample, grad = results[0]
        plain = [0, 1, 2, 5, 6, 7]
        ref_loss, ref_grad = reference_loss(
            SOFTMAX, z[plain], target[plain], reduction="none", label_smoothing=smoothing
        )
        np.testing.assert_allclose(per_sample[plain], ref_loss, rtol=RTOL[dtype], atol=RTOL[dtype])
        np.testing.assert_allclose(grad[plain], ref_grad, rtol=0, atol=RTOL[dtype] / 8)
        # The masked rows: their unmasked classes alone (masked ones have probability 0); with
        # smoothing the masked classes' target mass makes the loss infinite. (Probability
        # targets give NaN there, 0 * inf, as in torch and Keras.)
        for row, keep in ((3, slice(masked, None)), (4, slice(0, 300))):
            if kind != "labels":
                assert np.isnan(per_sample[row]) or smoothing != 0.0
                continue
            assert np.all(grad[row][np.isinf(z[row])] == 0.0) or smoothing != 0.0
            if smoothing != 0.0:
                assert per_sample[row] == np.inf
                continue
            sub_target = target[row : row + 1] - keep.start
            sub_loss, sub_grad = reference_loss(
                SOFTMAX, z[row : row + 1, keep], sub_target, reduction="none"
            )
            assert per_sample[row] == pytest.approx(sub_loss[0], rel=RTOL[dtype])
            np.testing.assert_allclose(grad[row, keep], sub_grad[0], rtol=0, atol=RTOL[dtype] / 8)


@pytest.mark.parametrize("nan", [np.nan, -np.nan], ids=["nan", "negative_nan"])
@pytest.mark.parametrize("c", [5, 1500])
def test_softmax_cross_entropy_long_row_nan(nan, c):
    z = np.zeros((2, c))
    z[0, c - 3] = nan  # in the last block of a long row
    per_sample, grad = kernels.softmax_cross_entropy(z, np.array([0, 0]), reduction="none")
    assert np.isnan(per_sample[0])
    assert np.all(np.isnan(grad[0]))
    assert per_sample[1] == pytest.approx(np.log(c))


@pytest.mark.parametrize("nan", [np.nan, -np.nan], ids=["nan", "negative_nan"])
def test_softmax_cross_entropy_nan_of_either_sign_propagates(nan):
    z = np.zeros((2, 5))
    z[0, 3] = nan
    per_sample, grad = kernels.softmax_cross_entropy(z, np.array([0, 0]), reduction="none")
    assert np.isnan(per_sample[0])
    assert np.all(np.isnan(grad[0]))
    assert per_sample[1] == pytest.approx(np.log(5))


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_huge_values_are_finite(name, dtype):
    prediction = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=dtype)
    if name in NON_NEGATIVE_PREDICTIONS:
        prediction = np.abs(prediction)
    target = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=dtype)
    loss, grad = loss_function(name)(prediction, target, reduction="none")
    assert np.all(np.isfinite(loss))
    assert np.all(np.isfinite(grad))
    ref_loss, ref_grad = reference_loss(name, prediction, target, reduction="none")
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL[dtype])
    np.testing.assert_allclose(grad, ref_grad, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_match_reference(name, dtype):
    # Rows longer than a block of 256 elements: elementwise rows are evaluated block by block,
    # the softmax focal cross-entropy keeps a row of scratch, softmax cross-entropy goes online.
    for cols in (257, 1031):
        problem = build_problem(
            name,
            n=3,
            cols=cols,
            dtype=dtype,
            scale=2.0,
            kind=TARGET_KINDS[name][-1],
            weighted=True,
            params=PARAMETERS[name][-1],
            seed=cols,
        )
        for reduction in ("none", "sum"):
            problem.reduction = reduction
            loss, grad = problem.run()
            assert_close_to_reference(problem, loss, grad)


# ---- ISAs ----

ISA_BITS_SCRIPT = """
import hashlib, json, numpy as np, densekit
from densekit import kernels
kinds, params, positive = {kinds!r}, {params!r}, {positive!r}
digests = {{}}
for name in kernels.LOSSES:
    digest = hashlib.sha256()
    for dtype in (np.float32, np.float64):
        for n, d in ((1, 1), (300, 1), (37, 10), (130, 7), (5, 300), (3, 1031)):
            rng = np.random.default_rng(1000 * n + d)
            p = rng.standard_normal((n, d)) * 4
            p.flat[0], p.flat[-1] = 80.0, -95.0
            p = np.abs(p) if name in positive else p
            kind = kinds[name]
            if kind == "real":
                t = p + rng.standard_normal((n, d))
            elif kind == "binary":
                t = rng.integers(0, 2, (n, d))
            elif kind == "signs":
                t = 2 * rng.integers(0, 2, (n, d)) - 1
            elif kind == "probabilities":
                t = rng.random((n, d))
                t /= t.sum(axis=1, keepdims=True)
            else:
                t = np.eye(d)[rng.integers(0, d, n)]
            p, t, w = p.astype(dtype), t.astype(dtype), rng.random(n).astype(dtype)
            call = getattr(kernels, name)
            per_sample, grad = call(p, t, reduction="none", sample_weight=w, **params[name])
            value, _ = call(p, t, compute_grad=False, **params[name])
            digest.update(per_sample.tobytes() + grad.tobytes() + np.float64(value).tobytes())
    digests[name] = digest.hexdigest()
print(json.dumps({{"isa": densekit.cpu_info()["isa"]["float32"], "digests": digests}}))
"""


def test_every_isa_gives_the_same_bits():
    """The row kernels are compiled per ISA (DENSEKIT_ISA forces a lower one; the AVX-512 build
    runs AVX2's on short rows) with IEEE operations in a fixed order, vector_exp and vector_log
    over the vector type with its fma rounded twice: every loss gives the same bits on each."""
    script = ISA_BITS_SCRIPT.format(
        kinds={name: TARGET_KINDS[name][-1] for name in LOSSES},
        params={name: PARAMETERS[name][-1] for name in LOSSES},
        positive=NON_NEGATIVE_PREDICTIONS,
    )
    results = {}
    for isa in densekit.cpu_info()["available_isas"]:
        result = json_of_child(script, {"DENSEKIT_ISA": isa}, timeout=300)
        assert result["isa"] == isa
        results[isa] = result["digests"]
    first = next(iter(results.values()))
    for name in LOSSES:
        assert len({digests[name] for digests in results.values()}) == 1, name
    assert set(first) == set(LOSSES)


# The losses' log (vecmath's vector_log and vector_log1p over each ISA's vector type, the fma
# rounded twice; the portable ISA's one-lane tail type is its scalar form): within these many
# units in the last place of a long-double reference (docs/guide/kernels.md).
LOG_ULP_BOUND = {False: 1.0, True: 1.5}  # log, log1p


def log_test_inputs(dtype):
    """Every float32 in [1, 2) and every 1021st positive float32 (subnormals included); for
    float64, 2**21 log-uniform samples over the whole range and 2**20 in [0.5, 2)."""
    if dtype == np.float32:
        one, two, inf = np.array([1.0, 2.0, np.inf], np.float32).view(np.int32)
        bits = np.concatenate([np.arange(one, two), np.arange(1, inf, 1021)]).astype(np.int32)
        return bits.view(np.float32)
    rng = np.random.default_rng(11)
    return np.concatenate(
        [np.exp(rng.uniform(-744.0, 709.7, 1 << 21)), rng.uniform(0.5, 2.0, 1 << 20)]
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log1p", [False, True])
def test_log_within_bound_of_long_double(dtype, log1p):
    x = log_test_inputs(dtype)
    longdouble = x.astype(np.longdouble)
    reference = np.log1p(longdouble) if log1p else np.log(longdouble)
    isas = densekit.cpu_info()["available_isas"]
    results = {isa: _core._loss_log_isa_test(isa, x, log1p=log1p) for isa in isas}
    for isa, got in results.items():
        assert got.dtype == dtype
        assert got.tobytes() == results[isas[0]].tobytes(), isa
    got = results[isas[0]]
    ulp = np.spacing(np.abs(reference.astype(dtype))).astype(np.longdouble)
    error = np.abs(got.astype(np.longdouble) - reference) / ulp
    worst = int(np.argmax(error))
    assert error[worst] <= LOG_ULP_BOUND[log1p], (x[worst], got[worst], reference[worst])


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array(
        [0.0, -0.0, -1.0, -info.tiny, np.inf, -np.inf, np.nan, 1.0, info.max, info.tiny,
         info.smallest_subnormal, -2.0],
        dtype,
    )  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        want_log = np.log(x.astype(np.longdouble)).astype(dtype)
        want_log1p = np.log1p(x.astype(np.longdouble)).astype(dtype)
    for isa in densekit.cpu_info()["available_isas"]:
        for log1p, want in ((False, want_log), (True, want_log1p)):
            got = _core._loss_log_isa_test(isa, x, log1p=log1p)
            np.testing.assert_allclose(got, want, rtol=2 * float(info.eps), err_msg=isa)
            assert np.array_equal(np.signbit(got[np.isinf(want)]), np.signbit(want[np.isinf(want)]))


# ---- Threads ----


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bitwise_equal_for_any_thread_count(name, dtype, reduction):
    # Large enough to be cut into many chunks of rows.
    n, cols = (4001, 97) if name == SOFTMAX else (40001, 9)
    problem = build_problem(
        name,
        n=n,
        cols=cols,
        dtype=dtype,
        scale=3.0,
        kind=TARGET_KINDS[name][-1],
        reduction=reduction,
        weighted=True,
        params=PARAMETERS[name][-1],
        seed=5,
    )
    loss_1, grad_1 = problem.run(num_threads=1)
    for threads in (2, 3, 7):
        loss, grad = problem.run(num_threads=threads)
        np.testing.assert_array_equal(np.asarray(loss), np.asarray(loss_1), strict=True)
        np.testing.assert_array_equal(grad, grad_1, strict=True)
        value_only, _ = problem.run(num_threads=threads, compute_grad=False)
        np.testing.assert_array_equal(np.asarray(value_only), np.asarray(loss_1), strict=True)


@pytest.mark.parametrize("cols", [1, 3, 10, 17, 64, 65])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", TARGET_KINDS[SOFTMAX])
def test_softmax_rows_in_groups_are_the_row_by_row_bits(cols, dtype, kind):
    """Rows of up to 64 logits go 16 at a time, each sweep over the group's rows in turn
    (loss_rows.inc): every row's loss and gradient are the bits of that row computed alone,
    with -inf, huge and tied logits, in a short last group; the widths reach both of the
    AVX-512 build's row kernels (AVX2's for rows under 128 bytes)."""
    rng = np.random.default_rng(cols)
    n = 37  # two groups of 16 and a short one
    z = (rng.standard_normal((n, cols)) * 4.0).astype(dtype)
    z[3, :] = -np.inf
    z[3, 0] = 0.0
    z[5, :] = np.finfo(dtype).max / 4
    z[7, :] = 1.5  # every logit tied
    z[20, cols // 2] = np.inf if cols > 1 else 2.0
    z[33, 0] = -np.inf
    target = make_target(SOFTMAX, rng, z, kind, dtype)
    weight = rng.uniform(0.5, 2.0, n).astype(dtype)
    for params in PARAMETERS[SOFTMAX]:
        call = functools.partial(
            kernels.softmax_cross_entropy, reduction="none", num_threads=1, **params
        )
        with np.errstate(invalid="ignore", over="ignore"):
            losses, grad = call(z, target, sample_weight=weight)
            for i in range(n):
                alone, grad_alone = call(
                    z[i : i + 1], target[i : i + 1], sample_weight=weight[i : i + 1]
                )
                np.testing.assert_array_equal(losses[i : i + 1], alone, strict=True)
                np.testing.assert_array_equal(grad[i : i + 1], grad_alone, strict=True)


@pytest.mark.parametrize("name", LOSSES)
def test_concurrent_python_threads_agree(name):
    problem = build_problem(
        name,
        n=3001,
        cols=33,
        dtype=np.float32,
        seed=6,
    )
    expected_loss, expected_grad = problem.run(num_threads=1)
    results = [None] * 4

    def work(slot):
        results[slot] = problem.run(num_threads=2)

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for loss, grad in results:
        assert loss == expected_loss
        np.testing.assert_array_equal(grad, expected_grad)


# ---- Registry ----


def test_registry_is_exported():
    assert kernels.LOSSES == _core.LOSSES
    assert LOSSES == (
        "mse",
        "mae",
        "huber",
        "softmax_cross_entropy",
        "sigmoid_binary_cross_entropy",
        "mape",
        "msle",
        "log_cosh",
        "poisson",
        "kl_divergence",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        "cosine_similarity",
        "sigmoid_focal_cross_entropy",
        "softmax_focal_cross_entropy",
    )
    for name in LOSSES:
        assert name in kernels.__all__
        assert getattr(kernels, name) is getattr(_core, name)
    assert "LOSSES" in kernels.__all__


# ---- Rejected arguments: exception type and the argument named first in the message ----


def valid_call(name, dtype=np.float64):
    rng = np.random.default_rng(7)
    prediction = rng.standard_normal((4, 3)).astype(dtype)
    if name in NON_NEGATIVE_PREDICTIONS:
        prediction = np.abs(prediction)
    target = make_target(name, rng, prediction, TARGET_KINDS[name][0], dtype)
    return prediction, target


def check_rejected(name, error, argument, *, prediction=None, target=None, **kwargs):
    default_prediction, default_target = valid_call(name)
    prediction = default_prediction if prediction is None else prediction
    target = default_target if target is None else target
    with pytest.raises(error, match=f"^{argument}: ") as info:
        loss_function(name)(prediction, target, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("name", LOSSES)
def test_rejects_bad_prediction(name):
    prediction, _ = valid_call(name)
    check_rejected(name, TypeError, "prediction", prediction=prediction.tolist())
    check_rejected(name, TypeError, "prediction", prediction=prediction.astype(np.int32))
    check_rejected(name, TypeError, "prediction", prediction=prediction.astype(np.float16))
    check_rejected(name, TypeError, "prediction", prediction=prediction.astype(">f8"))
    wide = np.zeros((4, 6))
    check_rejected(name, ValueError, "prediction", prediction=wide[:, ::2])
    check_rejected(name, ValueError, "prediction", prediction=np.zeros((4, 3, 1)))
    check_rejected(name, ValueError, "prediction", prediction=np.array(1.0))
    if name == SOFTMAX:
        check_rejected(name, ValueError, "prediction", prediction=np.zeros(4))


@pytest.mark.parametrize("name", LOSSES)
def test_rejects_bad_target(name):
    _, target = valid_call(name)
    check_rejected(name, TypeError, "target", target=target.tolist())
    if name == SOFTMAX:
        check_rejected(name, TypeError, "target", target=target.astype(np.int16))
        check_rejected(name, TypeError, "target", target=target.astype(np.uint32))
        check_rejected(name, TypeError, "target", target=np.zeros((4, 3), np.float32))
        message = check_rejected(name, ValueError, "target", target=np.zeros(5, np.int64))
        assert "(4,)" in message
        assert "(5,)" in message
        message = check_rejected(name, ValueError, "target", target=np.zeros((4, 2)))
        assert "(4, 3)" in message
        assert "(4, 2)" in message
        check_rejected(name, ValueError, "target", target=np.zeros((4, 1), np.int64))
        check_rejected(name, ValueError, "target", target=np.zeros((8, 3))[::2])
        for dtype in (np.int32, np.int64):
            labels = np.array([0, 1, 3, 2], dtype=dtype)
            message = check_rejected(name, ValueError, "target", target=labels)
            assert "label 3" in message
            assert "index 2" in message
            labels = np.array([0, -1, 2, 2], dtype=dtype)
            message = check_rejected(name, ValueError, "target", target=labels)
            assert "label -1" in message
            assert "index 1" in message
    else:
        check_rejected(name, TypeError, "target", target=target.astype(np.float32))
        check_rejected(name, TypeError, "target", target=target.astype(np.int64))
        message = check_rejected(name, ValueError, "target", target=np.zeros((4, 2)))
        assert "(4, 3)" in message
        assert "(4, 2)" in message
        check_rejected(name, ValueError, "target", target=np.zeros(4))
        check_rejected(name, ValueError, "target", target=np.zeros((3, 8)).T[:4, :3])


@pytest.mark.parametrize("name", LOSSES)
def test_rejects_bad_reduction(name):
    message = check_rejected(name, ValueError, "reduction", reduction="avg")
    assert message == "reduction: expected 'mean', 'sum' or 'none', got 'avg'"
    check_rejected(name, TypeError, "reduction", reduction=None)
    check_rejected(name, TypeError, "reduction", reduction=1)


@pytest.mark.parametrize("name", LOSSES)
def test_rejects_bad_sample_weight(name):
    check_rejected(name, ValueError, "sample_weight", sample_weight=np.ones(5))
    check_rejected(name, ValueError, "sample_weight", sample_weight=np.ones((4, 1)))
    check_rejected(name, ValueError, "sample_weight", sample_weight=np.ones(8)[::2])
    check_rejected(name, TypeError, "sample_weight", sample_weight=np.ones(4, np.float32))
    check_rejected(name, TypeError, "sample_weight", sample_weight=np.ones(4, np.int64))
    check_rejected(name, TypeError, "sample_weight", sample_weight=[1.0] * 4)


@pytest.mark.parametrize("name", LOSSES)
def test_rejects_bad_grad_out(name):
    prediction, target = valid_call(name)
    check_rejected(name, ValueError, "grad_out", grad_out=np.zeros((4, 2)))
    check_rejected(name, ValueError, "grad_out", grad_out=np.zeros(12))
    check_rejected(name, TypeError, "grad_out", grad_out=np.zeros((4, 3), np.float32))
    check_rejected(name, TypeError, "grad_out", grad_out=[[0.0] * 3] * 4)
    check_rejected(name, ValueError, "grad_out", grad_out=np.zeros((4, 6))[:, ::2])
    read_only = np.zeros((4, 3))
    read_only.flags.writeable = False
    check_rejected(name, ValueError, "grad_out", grad_out=read_only)
    check_rejected(
        name, ValueError, "grad_out", prediction=prediction, grad_out=prediction
    )  # the gradient may not overwrite its inputs
    if target.dtype == prediction.dtype:
        check_rejected(name, ValueError, "grad_out", target=target, grad_out=target)
    buffer = np.zeros(16)
    weights = buffer[:4]
    check_rejected(
        name, ValueError, "grad_out", sample_weight=weights, grad_out=buffer[2:14].reshape(4, 3)
    )
    check_rejected(
        name, ValueError, "grad_out", compute_grad=False, grad_out=np.zeros((4, 3))
    )  # a gradient buffer makes no sense without a gradient


@pytest.mark.parametrize("name", LOSSES)
def test_compute_grad_is_a_bool(name):
    check_rejected(name, TypeError, "compute_grad", compute_grad=None)
    check_rejected(name, TypeError, "compute_grad", compute_grad=1)
    prediction, target = valid_call(name)
    loss, grad = loss_function(name)(prediction, target, compute_grad=np.bool_(False))
    assert grad is None
    assert loss == loss_function(name)(prediction, target)[0]


@pytest.mark.parametrize("name", LOSSES)
def test_rejects_bad_num_threads(name):
    check_rejected(name, ValueError, "num_threads", num_threads=0)
    check_rejected(name, ValueError, "num_threads", num_threads=-2)
    check_rejected(name, TypeError, "num_threads", num_threads=1.5)
    check_rejected(name, TypeError, "num_threads", num_threads=True)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan"), float("inf")])
def test_huber_rejects_bad_delta(delta):
    check_rejected("huber", ValueError, "delta", delta=delta)


def test_huber_rejects_non_number_delta():
    check_rejected("huber", TypeError, "delta", delta="1")


@pytest.mark.parametrize("name", [SOFTMAX, "sigmoid_binary_cross_entropy"])
@pytest.mark.parametrize("smoothing", [-0.1, 1.5, float("nan")])
def test_rejects_bad_label_smoothing(name, smoothing):
    check_rejected(name, ValueError, "label_smoothing", label_smoothing=smoothing)


@pytest.mark.parametrize("name", ["mse", "mae"])
def test_parameters_belong_to_their_loss(name):
    prediction, target = valid_call(name)
    with pytest.raises(TypeError):
        loss_function(name)(prediction, target, delta=1.0)
    with pytest.raises(TypeError):
        loss_function(name)(prediction, target, label_smoothing=0.1)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([7], np.int64),
        np.array([3, -2, 9, 0, 9], np.int64),
        np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0], np.int64),
        np.random.default_rng(3).integers(-50, 50, 1031, dtype=np.int64),
    ],
)
def test_label_bounds_is_the_min_and_max(labels):
    assert _core._label_bounds(labels) == (labels.min(), labels.max())


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.array([1.0, 2.0]), TypeError, "labels: expected"),
        (np.array([1, 2], np.int32), TypeError, "labels: expected"),
        (np.zeros((2, 2), np.int64), TypeError, "1-D C-contiguous int64"),
        (np.arange(10, dtype=np.int64)[::2], TypeError, "1-D C-contiguous int64"),
        (np.zeros(0, np.int64), ValueError, "at least one label"),
    ],
)
def test_label_bounds_refuses_other_arrays(labels, error, match):
    with pytest.raises(error, match=match):
        _core._label_bounds(labels)
