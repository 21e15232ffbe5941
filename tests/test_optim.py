"""Optimizer steps and clip_by_global_norm: lockstep with torch.optim, agreement with the
float64 references, bitwise thread invariance, and every rejection at the boundary.

The cases below drive the suites: a new configuration gets every test.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import densekit
from densekit import kernels

from . import reference_optim as reference
from .helpers import json_of_child

DTYPES = [np.float32, np.float64]
# float64 agrees with torch and the references to rounding; float32 to its own precision.
# The absolute part scales with the array's largest value (see assert_close).
TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
THREAD_COUNTS = [1, 2, 3, 7]
STEPS = 20

# Awkward sizes: empty, one element, primes, non-multiples of 8 and 16, and 2-D layouts.
EDGE_SHAPES = [(0,), (1,), (7,), (13,), (31,), (97,), (130,), (0, 3), (1, 1), (3, 5), (17, 19)]
shapes = st.one_of(
    st.sampled_from(EDGE_SHAPES), array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=41)
)
seeds = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Case:
    """One optimizer configuration, in the kernels' argument names."""

    name: str
    optimizer: str  # one of kernels.OPTIMIZERS
    options: dict = field(default_factory=dict)
    amsgrad: bool = False
    pass_step: bool = True  # sgd: pass step= (else the zero-velocity rule); nadam: mu_product
    initial_sum: float = 0.0  # adagrad's initial accumulator value

    def __str__(self) -> str:
        return self.name

    @property
    def torch_oracle(self) -> bool:
        """Whether torch.optim has this rule (torch's convention; torch has no Lion)."""
        return self.options.get("convention", "torch") == "torch" and self.optimizer != "lion"


CASES = [
    Case("sgd", "sgd", {"lr": 0.1}),
    Case("sgd_momentum", "sgd", {"lr": 0.05, "momentum": 0.9}),
    Case("sgd_momentum_no_step", "sgd", {"lr": 0.05, "momentum": 0.9}, pass_step=False),
    Case("sgd_nesterov", "sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    Case("sgd_decay", "sgd", {"lr": 0.05, "weight_decay": 0.1}),
    Case(
        "sgd_dampening_decay",
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 1e-2},
    ),
    Case("sgd_maximize", "sgd", {"lr": 0.01, "momentum": 0.5, "maximize": True}),
    Case("adam", "adam", {"lr": 1e-2}),
    Case(
        "adam_decay",
        "adam",
        {"lr": 1e-2, "beta1": 0.3, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
    ),
    Case("adamw", "adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    Case("amsgrad", "adam", {"lr": 1e-2, "beta2": 0.9, "maximize": True}, amsgrad=True),
    Case("rmsprop", "rmsprop", {"lr": 1e-2}),
    Case("rmsprop_centered", "rmsprop", {"lr": 1e-2, "centered": True, "weight_decay": 1e-2}),
    Case("rmsprop_momentum", "rmsprop", {"lr": 1e-2, "alpha": 0.9, "momentum": 0.9}),
    Case(
        "rmsprop_centered_momentum",
        "rmsprop",
        {"lr": 1e-3, "momentum": 0.5, "centered": True, "maximize": True},
    ),
    Case("nadam", "nadam", {"lr": 1e-2}),
    Case("nadam_no_product", "nadam", {"lr": 1e-2, "beta1": 0.8}, pass_step=False),
    Case(
        "nadam_decay",
        "nadam",
        {"lr": 1e-2, "weight_decay": 0.1, "momentum_decay": 0.05, "maximize": True},
    ),
    Case(
        "nadamw",
        "nadam",
        {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True, "eps": 1e-4},
    ),
    Case("adamax", "adamax", {"lr": 1e-2}),
    Case(
        "adamax_decay",
        "adamax",
        {"lr": 1e-2, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.1, "maximize": True},
    ),
    Case("adagrad", "adagrad", {"lr": 0.1}),
    Case(
        "adagrad_decay",
        "adagrad",
        {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1, "eps": 1e-6, "maximize": True},
        initial_sum=0.1,
    ),
    # Keras's conventions (no torch oracle: the float64 references, and Keras itself in
    # test_keras_parity_optimizers.py).
    Case("sgd_keras", "sgd", {"lr": 0.1, "convention": "keras"}),
    Case(
        "sgd_keras_momentum_decay",
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "convention": "keras"},
    ),
    Case(
        "sgd_keras_nesterov",
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True, "convention": "keras"},
    ),
    Case("adam_keras", "adam", {"lr": 1e-2, "eps": 1e-3, "convention": "keras"}),
    Case("adamw_keras", "adam", {"lr": 1e-2, "weight_decay": 0.1, "convention": "keras"}),
    Case(
        "amsgrad_keras",
        "adam",
        {"lr": 1e-2, "beta2": 0.9, "eps": 1e-3, "maximize": True, "convention": "keras"},
        amsgrad=True,
    ),
    Case("rmsprop_keras", "rmsprop", {"lr": 1e-2, "eps": 1e-3, "convention": "keras"}),
    Case(
        "rmsprop_keras_centered_momentum",
        "rmsprop",
        {
            "lr": 1e-3,
            "alpha": 0.9,
            "momentum": 0.5,
            "centered": True,
            "weight_decay": 0.1,
            "eps": 1e-3,
            "convention": "keras",
        },
    ),
    Case("nadam_keras", "nadam", {"lr": 1e-2, "eps": 1e-3, "convention": "keras"}),
    Case(
        "nadam_keras_decay",
        "nadam",
        {"lr": 1e-2, "weight_decay": 0.1, "maximize": True, "convention": "keras"},
        pass_step=False,
    ),
    Case("adamax_keras", "adamax", {"lr": 1e-2, "eps": 1e-3, "convention": "keras"}),
    Case(
        "adamax_keras_decay",
        "adamax",
        {"lr": 1e-2, "weight_decay": 0.1, "maximize": True, "convention": "keras"},
    ),
    Case(
        "adagrad_keras",
        "adagrad",
        {"lr": 0.1, "eps": 1e-3, "weight_decay": 0.1, "convention": "keras"},
        initial_sum=0.1,
    ),
    Case("lion", "lion", {"lr": 1e-3}),
    Case(
        "lion_decay",
        "lion",
        {"lr": 1e-3, "beta1": 0.5, "beta2": 0.9, "weight_decay": 0.5, "maximize": True},
    ),
]
TORCH_CASES = [case for case in CASES if case.torch_oracle]

# State array name -> the name torch.optim keeps it under.
TORCH_STATE = {
    "velocity": "momentum_buffer",
    "m": "exp_avg",
    "v": "exp_avg_sq",
    "v_max": "max_exp_avg_sq",
    "square_avg": "square_avg",
    "grad_avg": "grad_avg",
    "u": "exp_inf",
    "sum": "sum",
}


def test_registry():
    assert kernels.OPTIMIZERS == ("sgd", "adam", "rmsprop", "nadam", "adamax", "adagrad", "lion")
    assert {case.optimizer for case in CASES} == set(kernels.OPTIMIZERS)


def state_names(case: Case) -> list[str]:
    options = case.options
    if case.optimizer == "sgd":
        return ["velocity"] if options.get("momentum", 0.0) else []
    if case.optimizer == "adam":
        return ["m", "v"] + (["v_max"] if case.amsgrad else [])
    if case.optimizer == "nadam":
        return ["m", "v"]
    if case.optimizer == "adamax":
        return ["m", "u"]
    if case.optimizer == "adagrad":
        return ["sum"]
    if case.optimizer == "lion":
        return ["m"]
    names = ["square_avg"]
    if options.get("centered", False):
        names.append("grad_avg")
    if options.get("momentum", 0.0) > 0:
        names.append("velocity")
    return names


def new_state(case: Case, param: np.ndarray) -> dict[str, np.ndarray]:
    state = {name: np.zeros_like(param) for name in state_names(case)}
    if case.optimizer == "adagrad":
        state["sum"][...] = case.initial_sum
    if case.optimizer == "nadam":  # the product of the momentum schedule, carried between calls
        state["_mu_product"] = np.ones((), np.float64)
    return state


def arrays_of(state: dict) -> dict[str, np.ndarray]:
    """The state arrays shaped like the parameters (without nadam's carried product)."""
    return {name: array for name, array in state.items() if not name.startswith("_")}


def take_step(module, case: Case, param, grad, state, step: int, **extra) -> None:
    """One step of `case` through `module` (densekit.kernels or the reference)."""
    options = dict(case.options, **extra)
    if case.optimizer == "sgd":
        if case.pass_step:
            options["step"] = step
        module.sgd_step(param, grad, velocity=state.get("velocity"), **options)
    elif case.optimizer == "adam":
        module.adam_step(
            param, grad, state["m"], state["v"], step=step, v_max=state.get("v_max"), **options
        )
    elif case.optimizer == "nadam":
        if case.pass_step:
            options["mu_product"] = float(state["_mu_product"])
        state["_mu_product"][...] = module.nadam_step(
            param, grad, state["m"], state["v"], step=step, **options
        )
    elif case.optimizer == "adamax":
        module.adamax_step(param, grad, state["m"], state["u"], step=step, **options)
    elif case.optimizer == "adagrad":
        module.adagrad_step(param, grad, state["sum"], step=step, **options)
    elif case.optimizer == "lion":
        module.lion_step(param, grad, state["m"], **options)
    else:
        module.rmsprop_step(
            param,
            grad,
            state["square_avg"],
            velocity=state.get("velocity"),
            grad_avg=state.get("grad_avg"),
            **options,
        )


def torch_optimizer(torch, case: Case, tensor):
    options = dict(case.options)
    if case.optimizer == "sgd":
        return torch.optim.SGD([tensor], foreach=False, **options)
    if case.optimizer == "adam":
        betas = (options.pop("beta1", 0.9), options.pop("beta2", 0.999))
        cls = (
            torch.optim.AdamW if options.pop("decoupled_weight_decay", False) else torch.optim.Adam
        )
        options.setdefault("weight_decay", 0.0)  # AdamW's default is 0.01
        return cls([tensor], betas=betas, amsgrad=case.amsgrad, foreach=False, **options)
    if case.optimizer in ("nadam", "adamax"):
        betas = (options.pop("beta1", 0.9), options.pop("beta2", 0.999))
        cls = torch.optim.NAdam if case.optimizer == "nadam" else torch.optim.Adamax
        return cls([tensor], betas=betas, foreach=False, **options)
    if case.optimizer == "adagrad":
        return torch.optim.Adagrad(
            [tensor], initial_accumulator_value=case.initial_sum, foreach=False, **options
        )
    return torch.optim.RMSprop([tensor], foreach=False, **options)


def assert_close(got, want, dtype) -> None:
    # A value near zero may come from cancelling larger terms and carries their rounding, so
    # the absolute floor scales with the largest value of the array.
    tol = TOLERANCE[dtype]
    scale = float(np.max(np.abs(want), initial=1.0))
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale)


def random_like(rng, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Step kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=seeds)
def test_step_lockstep_with_torch(case, dtype, shape, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    param = random_like(rng, shape, dtype)
    state = new_state(case, param)
    tensor = torch.nn.Parameter(torch.from_numpy(param.copy()))
    optimizer = torch_optimizer(torch, case, tensor)
    for step in range(1, STEPS + 1):
        grad = random_like(rng, shape, dtype)
        take_step(kernels, case, param, grad, state, step)
        tensor.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        assert_close(param, tensor.detach().numpy(), dtype)
    torch_state = optimizer.state[tensor]
    for name, array in arrays_of(state).items():
        assert_close(array, torch_state[TORCH_STATE[name]].numpy(), dtype)


@pytest.mark.parametrize("case", CASES, ids=str)
@settings(max_examples=10, deadline=None)
@given(shape=shapes, seed=seeds)
def test_step_matches_reference(case, shape, seed):
    rng = np.random.default_rng(seed)
    param = random_like(rng, shape, np.float64)
    state = new_state(case, param)
    expected_param = param.copy()
    expected_state = {name: array.copy() for name, array in state.items()}
    for step in range(1, STEPS + 1):
        grad = random_like(rng, shape, np.float64)
        take_step(kernels, case, param, grad, state, step)
        take_step(reference, case, expected_param, grad, expected_state, step)
    assert_close(param, expected_param, np.float64)
    for name, array in arrays_of(state).items():
        assert_close(array, expected_state[name], np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_step_bitwise_same_for_any_thread_count(case, dtype):
    rng = np.random.default_rng(7)
    shape = (3 * 16384 + 1237,)  # several blocks and a ragged tail
    start = random_like(rng, shape, dtype)
    grads = [random_like(rng, shape, dtype) for _ in range(3)]
    results = []
    for threads in THREAD_COUNTS:
        param = start.copy()
        state = new_state(case, param)
        for step, grad in enumerate(grads, start=1):
            take_step(kernels, case, param, grad, state, step, num_threads=threads)
        results.append([param, *state.values()])
    for arrays in results[1:]:
        for got, want in zip(arrays, results[0]):
            assert got.tobytes() == want.tobytes()


ISA_BITS_SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, {root!r})
import numpy as np
import densekit
from densekit import kernels
from tests.test_optim import CASES, new_state, random_like, take_step
digests = {{}}
for case in CASES:
    digest = hashlib.sha256()
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(7)
        param = random_like(rng, (16384 + 1237,), dtype)  # a whole block and a ragged tail
        param[:3] = [np.nan, np.inf, 0.0]
        state = new_state(case, param)
        for step in range(1, 4):
            grad = random_like(rng, param.shape, dtype)
            grad[3:6] = [np.nan, -np.inf, 0.0]
            take_step(kernels, case, param, grad, state, step)
        for array in (param, *state.values()):
            digest.update(np.ascontiguousarray(array).tobytes())
    digests[case.name] = digest.hexdigest()
print(json.dumps({{"isa": densekit.cpu_info()["isa"]["float32"], "digests": digests}}))
"""


def test_every_isa_gives_the_same_bits():
    """The steps' loops are compiled per ISA (DENSEKIT_ISA forces a lower one) from IEEE
    operations in a fixed order, none contracted: every step gives the same bits on each,
    NaN and infinities included."""
    root = str(Path(__file__).resolve().parent.parent)
    results = {}
    for isa in densekit.cpu_info()["available_isas"]:
        result = json_of_child(
            ISA_BITS_SCRIPT.format(root=root), {"DENSEKIT_ISA": isa}, timeout=300
        )
        assert result["isa"] == isa
        results[isa] = result["digests"]
    first = next(iter(results.values()))
    assert set(first) == {case.name for case in CASES}
    for digests in results.values():
        assert digests == first


def test_concurrent_python_threads_get_the_sequential_results():
    # The kernels keep no shared state, so calls from several Python threads at once (the GIL
    # released) must give what the same calls give one after another.
    case = next(c for c in CASES if c.name == "amsgrad")
    rng = np.random.default_rng(13)
    starts = [random_like(rng, (40_000,), np.float32) for _ in range(4)]
    grads = [random_like(rng, (40_000,), np.float32) for _ in range(4)]

    def run(index):
        param = starts[index].copy()
        state = new_state(case, param)
        for step in range(1, 4):
            take_step(kernels, case, param, grads[index], state, step, num_threads=2)
        return param

    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, range(4)))
    for index, param in enumerate(concurrent):
        assert param.tobytes() == run(index).tobytes()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_step_any_ndim_and_read_only_grad(case):
    # A 0-d and a 3-d array step exactly as their flat 1-d forms; grad may be read-only.
    rng = np.random.default_rng(3)
    for shape in [(), (2, 3, 5)]:
        param = random_like(rng, shape, np.float64)
        grad = random_like(rng, shape, np.float64)
        grad.flags.writeable = False
        flat = param.reshape(-1).copy()
        state, flat_state = new_state(case, param), new_state(case, flat)
        for step in (1, 2):
            take_step(kernels, case, param, grad, state, step)
            take_step(kernels, case, flat, grad.reshape(-1), flat_state, step)
        assert param.reshape(-1).tobytes() == flat.tobytes()


def test_sgd_first_step_overwrites_velocity_like_torch():
    # At step 1 torch sets the buffer to g, ignoring dampening; velocity's content is unused.
    grad = np.array([1.0, -2.0, 4.0])
    param = np.zeros(3)
    velocity = np.full(3, np.nan)
    kernels.sgd_step(param, grad, lr=0.5, momentum=0.9, dampening=0.5, velocity=velocity, step=1)
    np.testing.assert_array_equal(velocity, grad)
    np.testing.assert_array_equal(param, -0.5 * grad)
    kernels.sgd_step(param, grad, lr=0.5, momentum=0.9, dampening=0.5, velocity=velocity, step=2)
    np.testing.assert_array_equal(velocity, 0.9 * grad + 0.5 * grad)


def test_nadam_product_passed_or_recomputed_gives_the_same_bits():
    # The product the previous call returned and the one recomputed from step agree exactly.
    for convention in ("torch", "keras"):
        for dtype in DTYPES:
            rng = np.random.default_rng(1)
            carried = random_like(rng, (33,), dtype)
            recomputed = carried.copy()
            states = [[np.zeros_like(carried), np.zeros_like(carried)] for _ in range(2)]
            product = 1.0
            for step in range(1, 12):
                grad = random_like(rng, (33,), dtype)
                options = {"step": step, "lr": 0.01, "convention": convention}
                product = kernels.nadam_step(
                    carried, grad, *states[0], mu_product=product, **options
                )
                again = kernels.nadam_step(recomputed, grad, *states[1], **options)
                assert again == product
            assert carried.tobytes() == recomputed.tobytes()


def test_keras_sgd_velocity_holds_the_scaled_step():
    # Keras's velocity is -lr * g (torch's is g): they part when the rate changes.
    param, velocity = np.zeros(2), np.zeros(2)
    grad = np.array([1.0, -2.0])
    kernels.sgd_step(param, grad, lr=0.5, momentum=0.9, velocity=velocity, convention="keras")
    np.testing.assert_array_equal(velocity, -0.5 * grad)
    kernels.sgd_step(param, grad, lr=0.25, momentum=0.9, velocity=velocity, convention="keras")
    np.testing.assert_array_equal(velocity, 0.9 * -0.5 * grad - 0.25 * grad)
    np.testing.assert_array_equal(param, -0.5 * grad + velocity)


def test_lion_sign_of_zero_and_nan_is_zero():
    param = np.ones(3)
    m = np.zeros(3)
    kernels.lion_step(param, np.array([0.0, np.nan, -3.0]), m, lr=0.5)
    np.testing.assert_array_equal(param, [1.0, 1.0, 1.5])


def test_scalar_types_from_numpy_are_accepted():
    param, grad = np.ones(4, np.float32), np.ones(4, np.float32)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    kernels.adam_step(
        param, grad, m, v, step=np.int64(1), lr=np.float32(0.5), maximize=np.bool_(False)
    )
    np.testing.assert_allclose(param, 0.5, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# clip_by_global_norm

mixed_grads = st.lists(st.tuples(shapes, st.sampled_from(DTYPES)), min_size=0, max_size=4)


def original_and_clipped(grads, max_norm):
    originals = [g.copy() for g in grads]
    norm = kernels.clip_by_global_norm(grads, max_norm)
    return originals, norm


@settings(max_examples=25, deadline=None)
@given(layout=mixed_grads, seed=seeds, ratio=st.sampled_from([0.1, 0.5, 0.999, 1.0, 2.0]))
def test_clip_matches_reference(layout, seed, ratio):
    rng = np.random.default_rng(seed)
    grads = [random_like(rng, shape, dtype) for shape, dtype in layout]
    norm_before = reference.global_norm(grads)
    max_norm = max(norm_before * ratio, 1e-3)
    originals, norm = original_and_clipped(grads, max_norm)
    assert math.isclose(norm, norm_before, rel_tol=1e-13, abs_tol=0.0)
    for original, clipped in zip(originals, grads):
        assert clipped.dtype == original.dtype
        if norm > max_norm:
            expected = (original.astype(np.float64) * (max_norm / norm_before)).astype(
                original.dtype
            )
            np.testing.assert_allclose(
                clipped, expected, rtol=2e-7 if clipped.itemsize == 4 else 1e-13
            )
        else:
            assert clipped.tobytes() == original.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ratio", [0.05, 0.7, 3.0])
def test_clip_matches_torch_clip_grad_norm(dtype, ratio):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    grads = [random_like(rng, shape, dtype) for shape in [(37,), (5, 13), (1,), (0,)]]
    tensors = [
        torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype)) for g in grads
    ]
    for tensor, grad in zip(tensors, grads):
        tensor.grad = torch.from_numpy(grad.copy())
    max_norm = ratio * reference.global_norm(grads)
    torch_norm = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm, foreach=False))
    norm = kernels.clip_by_global_norm(grads, max_norm)
    tol = TOLERANCE[dtype]
    assert math.isclose(norm, torch_norm, rel_tol=tol["rtol"])
    # torch divides by norm + 1e-6 and scales by at most 1; below max_norm both leave the arrays.
    correction = norm / (norm + 1e-6) if norm > max_norm else 1.0
    for tensor, grad in zip(tensors, grads):
        np.testing.assert_allclose(grad * correction, tensor.grad.numpy(), **tol)


def test_clip_scales_only_above_max_norm():
    grads = [np.array([3.0]), np.array([4.0], np.float32)]
    assert kernels.clip_by_global_norm(grads, 5.0) == 5.0
    assert grads[0][0] == 3.0 and grads[1][0] == 4.0
    assert kernels.clip_by_global_norm(grads, 2.5) == 5.0
    np.testing.assert_array_equal(grads[0], [1.5])
    np.testing.assert_array_equal(grads[1], np.array([2.0], np.float32))


@pytest.mark.parametrize("bad, expected", [(np.nan, math.nan), (np.inf, math.inf)])
def test_clip_non_finite_norm_leaves_arrays_untouched(bad, expected):
    rng = np.random.default_rng(5)
    grads = [random_like(rng, (50,), np.float32), random_like(rng, (40_000,), np.float64)]
    grads[1][12345] = bad
    originals, norm = original_and_clipped(grads, 1.0)
    assert (math.isnan(norm) and math.isnan(expected)) or norm == expected
    for original, grad in zip(originals, grads):
        assert grad.tobytes() == original.tobytes()


def test_clip_nan_wins_over_inf():
    grads = [np.array([np.inf, 1.0]), np.array([np.nan], np.float32)]
    assert math.isnan(kernels.clip_by_global_norm(grads, 1.0))
    assert math.isnan(reference.global_norm(grads))


def test_clip_norm_does_not_overflow_for_large_finite_values():
    values = [1e200, -3e200, 2.5e305, 7.0]
    grads = [np.array(values[:2]), np.array(values[2:])]
    norm = kernels.clip_by_global_norm(grads, 1.0)
    assert math.isclose(norm, math.hypot(*values), rel_tol=1e-15)
    np.testing.assert_allclose(np.concatenate(grads), np.array(values) / norm, rtol=1e-15)


def test_clip_empty_inputs():
    assert kernels.clip_by_global_norm([], 1.0) == 0.0
    assert kernels.clip_by_global_norm((), 1.0) == 0.0
    assert kernels.clip_by_global_norm([np.zeros(0, np.float32), np.zeros((3, 0))], 1.0) == 0.0
    zero_d = np.array(2.0)
    assert kernels.clip_by_global_norm((zero_d,), 1.0) == 2.0
    assert zero_d == 1.0


def test_clip_bitwise_same_for_any_thread_count():
    rng = np.random.default_rng(9)
    layout = [((100_003,), np.float32), ((301, 233), np.float64), ((5,), np.float32)]
    start = [random_like(rng, shape, dtype) for shape, dtype in layout]
    runs = []
    for threads in THREAD_COUNTS:
        grads = [g.copy() for g in start]
        norm = kernels.clip_by_global_norm(grads, 10.0, num_threads=threads)
        runs.append((norm.hex(), [g.tobytes() for g in grads]))
    assert all(run == runs[0] for run in runs[1:])
    assert math.isclose(float.fromhex(runs[0][0]), reference.global_norm(start), rel_tol=1e-13)


# ---------------------------------------------------------------------------------------------
# Rejections: each names the argument at the start of its message.


def arrays(n=5, dtype=np.float64):
    rng = np.random.default_rng(0)
    return random_like(rng, (n,), dtype), random_like(rng, (n,), dtype)


def read_only(a):
    a.flags.writeable = False
    return a


def non_contiguous(dtype=np.float64):
    return np.zeros((5, 2), dtype)[:, 0]


def sgd(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "lr": 0.1} | overrides
    return lambda: kernels.sgd_step(**args)


def adam(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "m": np.zeros(5), "v": np.zeros(5)}
    args |= {"step": 1, "lr": 1e-3} | overrides
    return lambda: kernels.adam_step(**args)


def rmsprop(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "square_avg": np.zeros(5), "lr": 1e-3} | overrides
    return lambda: kernels.rmsprop_step(**args)


def nadam(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "m": np.zeros(5), "v": np.zeros(5)}
    args |= {"step": 1, "lr": 1e-3} | overrides
    return lambda: kernels.nadam_step(**args)


def adamax(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "m": np.zeros(5), "u": np.zeros(5)}
    args |= {"step": 1, "lr": 1e-3} | overrides
    return lambda: kernels.adamax_step(**args)


def adagrad(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "sum": np.zeros(5), "lr": 1e-3} | overrides
    return lambda: kernels.adagrad_step(**args)


def lion(**overrides):
    param, grad = arrays()
    args = {"param": param, "grad": grad, "m": np.zeros(5), "lr": 1e-3} | overrides
    return lambda: kernels.lion_step(**args)


def clip(grads, max_norm=1.0, **kwargs):
    return lambda: kernels.clip_by_global_norm(grads, max_norm, **kwargs)


def shared_pair(first=slice(0, 5), second=slice(3, 8)):
    buffer = np.zeros(8)
    return buffer[first], buffer[second]


def overlapping_state(kernel, first, second):
    a, b = shared_pair()
    return kernel(**{first: a, second: b})


REJECTIONS = [
    # param and grad
    ("param int dtype", sgd(param=np.zeros(5, np.int64)), TypeError, "param"),
    ("param list", sgd(param=[0.0] * 5), TypeError, "param"),
    ("param big-endian", sgd(param=np.zeros(5, ">f8")), TypeError, "param"),
    ("param non-contiguous", sgd(param=non_contiguous()), ValueError, "param"),
    ("param read-only", sgd(param=read_only(np.zeros(5))), ValueError, "param"),
    ("grad dtype", sgd(grad=np.zeros(5, np.float32)), TypeError, "grad"),
    ("grad shape", sgd(grad=np.zeros(6)), ValueError, "grad"),
    ("grad 2-d shape", adam(grad=np.zeros((5, 1))), ValueError, "grad"),
    ("grad non-contiguous", rmsprop(grad=non_contiguous()), ValueError, "grad"),
    (
        "param is grad",
        overlapping_state(sgd, "param", "grad"),
        ValueError,
        "param: must not share memory with grad",
    ),
    # state arrays
    ("velocity missing", sgd(momentum=0.9), ValueError, "velocity"),
    ("velocity unused", sgd(velocity=np.zeros(5)), ValueError, "velocity"),
    ("velocity dtype", sgd(momentum=0.9, velocity=np.zeros(5, np.float32)), TypeError, "velocity"),
    ("velocity shape", sgd(momentum=0.9, velocity=np.zeros((5, 1))), ValueError, "velocity"),
    (
        "velocity non-contiguous",
        sgd(momentum=0.9, velocity=non_contiguous()),
        ValueError,
        "velocity",
    ),
    (
        "velocity read-only",
        sgd(momentum=0.9, velocity=read_only(np.zeros(5))),
        ValueError,
        "velocity",
    ),
    (
        "velocity is param",
        overlapping_state(lambda **kw: sgd(momentum=0.9, **kw), "param", "velocity"),
        ValueError,
        "velocity: must not share memory with param",
    ),
    (
        "velocity is grad",
        overlapping_state(lambda **kw: sgd(momentum=0.9, **kw), "grad", "velocity"),
        ValueError,
        "velocity: must not share memory with grad",
    ),
    ("m missing", adam(m=None), TypeError, "m"),
    ("m dtype", adam(m=np.zeros(5, np.float32)), TypeError, "m"),
    ("v read-only", adam(v=read_only(np.zeros(5))), ValueError, "v"),
    (
        "v overlaps m",
        overlapping_state(adam, "m", "v"),
        ValueError,
        "v: must not share memory with m",
    ),
    (
        "v_max overlaps v",
        overlapping_state(adam, "v", "v_max"),
        ValueError,
        "v_max: must not share memory with v",
    ),
    ("v_max shape", adam(v_max=np.zeros(4)), ValueError, "v_max"),
    ("square_avg read-only", rmsprop(square_avg=read_only(np.zeros(5))), ValueError, "square_avg"),
    (
        "square_avg is grad",
        overlapping_state(rmsprop, "grad", "square_avg"),
        ValueError,
        "square_avg: must not share memory with grad",
    ),
    ("grad_avg missing", rmsprop(centered=True), ValueError, "grad_avg"),
    ("grad_avg unused", rmsprop(grad_avg=np.zeros(5)), ValueError, "grad_avg"),
    (
        "grad_avg overlaps square_avg",
        overlapping_state(lambda **kw: rmsprop(centered=True, **kw), "square_avg", "grad_avg"),
        ValueError,
        "grad_avg: must not share memory with square_avg",
    ),
    ("rmsprop velocity missing", rmsprop(momentum=0.5), ValueError, "velocity"),
    (
        "rmsprop grad_avg overlaps velocity",
        overlapping_state(
            lambda **kw: rmsprop(momentum=0.5, centered=True, **kw), "velocity", "grad_avg"
        ),
        ValueError,
        "grad_avg: must not share memory with velocity",
    ),
    # hyperparameters
    ("lr negative", sgd(lr=-0.1), ValueError, "lr"),
    ("lr nan", adam(lr=math.nan), ValueError, "lr"),
    ("lr inf", rmsprop(lr=math.inf), ValueError, "lr"),
    ("lr str", sgd(lr="0.1"), TypeError, "lr"),
    ("lr bool", sgd(lr=True), TypeError, "lr"),
    ("lr None", adam(lr=None), TypeError, "lr"),
    ("momentum negative", sgd(momentum=-0.5, velocity=np.zeros(5)), ValueError, "momentum"),
    ("weight_decay negative", adam(weight_decay=-1e-4), ValueError, "weight_decay"),
    ("dampening nan", sgd(dampening=math.nan), ValueError, "dampening"),
    ("nesterov without momentum", sgd(nesterov=True), ValueError, "nesterov"),
    (
        "nesterov with dampening",
        sgd(nesterov=True, momentum=0.9, dampening=0.1, velocity=np.zeros(5)),
        ValueError,
        "nesterov",
    ),
    ("nesterov int", sgd(nesterov=1), TypeError, "nesterov"),
    ("maximize str", adam(maximize="yes"), TypeError, "maximize"),
    ("sgd step zero", sgd(step=0), ValueError, "step"),
    ("step zero", adam(step=0), ValueError, "step"),
    ("step negative", adam(step=-3), ValueError, "step"),
    ("step huge", adam(step=2**70), ValueError, "step"),
    ("step float", adam(step=1.0), TypeError, "step"),
    ("step bool", adam(step=True), TypeError, "step"),
    ("step None", adam(step=None), TypeError, "step"),
    ("beta1 one", adam(beta1=1.0), ValueError, "beta1"),
    ("beta1 negative", adam(beta1=-0.1), ValueError, "beta1"),
    ("beta2 above one", adam(beta2=1.5), ValueError, "beta2"),
    ("eps negative", adam(eps=-1e-8), ValueError, "eps"),
    ("alpha above one", rmsprop(alpha=1.01), ValueError, "alpha"),
    ("alpha negative", rmsprop(alpha=-0.5), ValueError, "alpha"),
    ("rmsprop momentum negative", rmsprop(momentum=-0.1), ValueError, "momentum"),
    ("num_threads zero", sgd(num_threads=0), ValueError, "num_threads"),
    ("num_threads float", adam(num_threads=2.0), TypeError, "num_threads"),
    ("rmsprop num_threads negative", rmsprop(num_threads=-1), ValueError, "num_threads"),
    # conventions and the new steps
    ("convention unknown", sgd(convention="tf"), ValueError, "convention"),
    ("convention None", adam(convention=None), TypeError, "convention"),
    ("convention bytes", rmsprop(convention=b"keras"), TypeError, "convention"),
    ("keras dampening", sgd(convention="keras", dampening=0.1), ValueError, "dampening"),
    (
        "keras coupled decay",
        adam(convention="keras", weight_decay=0.1, decoupled_weight_decay=False),
        ValueError,
        "decoupled_weight_decay",
    ),
    (
        "nadam keras coupled decay",
        nadam(convention="keras", weight_decay=0.1, decoupled_weight_decay=False),
        ValueError,
        "decoupled_weight_decay",
    ),
    ("nadam step zero", nadam(step=0), ValueError, "step"),
    ("nadam mu_product above one", nadam(mu_product=1.5), ValueError, "mu_product"),
    ("nadam momentum_decay negative", nadam(momentum_decay=-1.0), ValueError, "momentum_decay"),
    ("nadam v missing", nadam(v=None), TypeError, "v"),
    ("adamax u overlaps m", overlapping_state(adamax, "m", "u"), ValueError, "u: must not"),
    ("adamax beta2 one", adamax(beta2=1.0), ValueError, "beta2"),
    ("adamax step None", adamax(step=None), TypeError, "step"),
    ("adagrad sum dtype", adagrad(sum=np.zeros(5, np.float32)), TypeError, "sum"),
    ("adagrad lr_decay without step", adagrad(lr_decay=0.1), ValueError, "step"),
    ("adagrad keras lr_decay", adagrad(lr_decay=0.1, convention="keras"), ValueError, "lr_decay"),
    ("adagrad eps negative", adagrad(eps=-1.0), ValueError, "eps"),
    ("lion beta1 above one", lion(beta1=1.5), ValueError, "beta1"),
    ("lion m is grad", overlapping_state(lion, "grad", "m"), ValueError, "m: must not"),
    ("lion lr nan", lion(lr=math.nan), ValueError, "lr"),
    # clip_by_global_norm
    ("clip grads ndarray", clip(np.zeros(3)), TypeError, "grads"),
    ("clip grads generator", clip(g for g in [np.zeros(3)]), TypeError, "grads"),
    ("clip element list", clip([np.zeros(3), [1.0, 2.0]]), TypeError, r"grads\[1\]"),
    ("clip element int dtype", clip([np.zeros(3, np.int32)]), TypeError, r"grads\[0\]"),
    ("clip element non-contiguous", clip([non_contiguous(np.float32)]), ValueError, r"grads\[0\]"),
    (
        "clip element read-only",
        clip([np.zeros(2), read_only(np.zeros(2))]),
        ValueError,
        r"grads\[1\]",
    ),
    (
        "clip same array twice",
        clip([np.zeros(1), *[np.ones(3)] * 2]),
        ValueError,
        r"grads\[2\]: must not share memory with grads\[1\]",
    ),
    (
        "clip overlapping views",
        clip([*shared_pair(slice(0, 4), slice(2, 6))[::-1], np.ones(2)]),
        ValueError,
        r"grads\[1\]: must not share memory with grads\[0\]",
    ),
    ("clip max_norm zero", clip([np.ones(2)], 0.0), ValueError, "max_norm"),
    ("clip max_norm negative", clip([np.ones(2)], -1.0), ValueError, "max_norm"),
    ("clip max_norm inf", clip([np.ones(2)], math.inf), ValueError, "max_norm"),
    ("clip max_norm nan", clip([np.ones(2)], math.nan), ValueError, "max_norm"),
    ("clip max_norm str", clip([np.ones(2)], "1"), TypeError, "max_norm"),
    ("clip num_threads zero", clip([np.ones(2)], num_threads=0), ValueError, "num_threads"),
]


@pytest.mark.parametrize(
    "call, error, name", [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_rejections_name_the_argument(call, error, name):
    with pytest.raises(error, match=rf"^{name}(?!\w)"):
        call()


def test_rejected_clip_leaves_every_array_untouched():
    grads = [np.full(3, 10.0), np.full(2, 10.0, np.float32), np.zeros(2, np.int64)]
    with pytest.raises(TypeError, match=r"^grads\[2\]"):
        kernels.clip_by_global_norm(grads, 1.0)
    assert (grads[0] == 10.0).all() and (grads[1] == 10.0).all()


def test_disjoint_views_of_one_buffer_are_accepted():
    buffer = np.zeros(10)
    param, grad, velocity = np.ones(3), np.ones(3), buffer[5:8]
    kernels.sgd_step(param, grad, lr=1.0, momentum=0.5, velocity=velocity)
    grads = [buffer[:5], buffer[5:]]
    assert kernels.clip_by_global_norm(grads, 1.0) == pytest.approx(math.sqrt(3.0))


@pytest.mark.parametrize("convention", ["torch", "keras"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nadam_recomputed_product_stops_where_it_stays_and_refuses_endless_ones(convention, dtype):
    # Without mu_product the kernel multiplies mu_1 ... mu_(step - 1) one by one (torch's
    # float32 product, or Keras's in the parameters' dtype); the product stops changing once
    # it reaches zero or a rounding fixed point, and the kernel stops there: the bits of the
    # product carried step by step (mu_product passed), at once for a step of 2^40.
    empty = np.zeros(0, dtype)

    def kernel(step, **options):
        return kernels.nadam_step(
            empty, empty, empty.copy(), empty.copy(), step=step, lr=0.0, convention=convention,
            **options
        )  # fmt: skip

    carried = 1.0
    for step in range(1, 9001):
        carried = kernel(step, mu_product=carried)
        if step in (1, 37, 800, 9000):
            assert kernel(step) == carried, step
    assert kernel(2**40) == carried == kernel(9001, mu_product=carried)
    if dtype == np.float64 and convention == "keras":  # a product that falls for ~2^40 steps
        with pytest.raises(ValueError, match=r"pass mu_product"):
            kernel(2**40, beta1=1 - 2**-40)
