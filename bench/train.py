"""Training with the model layer: densekit.Sequential against torch eager and a hand-written
NumPy MLP, the "train" family of the suite.

Networks: relu hidden layers, softmax output, sparse categorical cross-entropy, Adam (lr 1e-3,
eps 1e-8, Keras's rule, which densekit's model layer follows: torch's Adam is given the
equivalent epsilon each step); shapes are written batch x layer widths, e.g. 64x784-256-128-10.
Cases (float32 unless --dtype says otherwise):
- step: one training step (forward, backward, Adam) of 784-256-128-10 at batch 64 and 512 and
  of the tiny 64-32-10 at batch 32, where per-call overhead dominates; densekit is
  train_on_batch, torch zero_grad + cross_entropy + backward + Adam.step, NumPy the textbook
  MLP. Every implementation starts from the same weights and cycles over the same 8 batches;
- fit step, py train_on_batch, py fit step (densekit only): the step fit's loop runs on buffers
  already filled, and train_on_batch and that step with every kernel call replaced by a Python
  no-op: the model layer's own Python per step;
- epoch: one epoch of 100 steps, densekit's fit (shuffled, a new seed each call) against the
  equivalent torch and NumPy loops over the same data;
- predict, predict_on_batch: batch-1 inference latency of 784-256-128-10.

Verification: a step (fit step) case's first call returns, for each library, the weights after
3 float64 steps from the same initial weights on the same batches (train_on_batch; for epochs,
fit over 3 batches unshuffled against the peers' loops), computed when the case is built, and
the harness compares them to densekit's; a predict case compares the probabilities. The
summary says whether the issue's targets over torch eager are met.
Run alone: python -m bench.train [options].
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import densekit
from densekit import layers, optimizers

from . import peers
from .config import Settings
from .harness import DENSEKIT, Case, Impl, Record, Skip, Tolerance

FAMILY = "train"
MLP, TINY = (784, 256, 128, 10), (64, 32, 10)
STEP_CASES = ((MLP, 64), (MLP, 512), (TINY, 32))
QUICK_STEP_CASES = ((MLP, 64), (TINY, 32))
QUICK_EPOCH_CASES = ((TINY, 32),)  # a 784-256-128-10 epoch takes seconds per call in torch
PREDICT_SIZES = MLP
EPOCH_STEPS = 100
VERIFY_STEPS = 3
STEP_BATCHES = 8  # each implementation cycles over the same batches
TARGETS = (  # the speed-ups over torch eager, float32: (case, shape, target)
    ("step", "64x784-256-128-10", 3.0),
    ("step", "32x64-32-10", 10.0),
    ("predict", "1x784-256-128-10", 4.0),
)
# float64 weights after 3 Adam steps agree to ~1e-15 relative; float32 would not verify Adam,
# whose first steps move each weight by about lr * sign(gradient).
WEIGHT_TOLERANCE = Tolerance(rtol=1e-9, atol=1e-10)
PREDICT_TOLERANCE = {
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
}
KERNEL_NAMES = (  # what a step of the model layer calls
    "dense_forward",
    "dense_backward",
    "activation_forward",
    "activation_backward",
    "softmax_cross_entropy",
    "adam_step",
    "clip_by_global_norm",
)


def shape_name(sizes: tuple[int, ...], batch: int) -> str:
    return f"{batch}x" + "-".join(map(str, sizes))


def step_flop(sizes: tuple[int, ...], batch: int) -> float:
    """Forward 2 n k m per layer, backward 4 n k m (dx and dw) except the input layer's dx."""
    products = sum(k * m for k, m in zip(sizes[:-1], sizes[1:]))
    return 6.0 * batch * products - 2.0 * batch * sizes[0] * sizes[1]


def predict_flop(sizes: tuple[int, ...], batch: int) -> float:
    return 2.0 * batch * sum(k * m for k, m in zip(sizes[:-1], sizes[1:]))


STEP_FORMULA = "6n*sum(k*m) - 2n*k0*m0 (forward, backward without the input layer's dx)"


# -- the three implementations ---------------------------------------------------------------


def initial_weights(sizes, dtype, seed=0):
    """Glorot-uniform kernels (in, out) and zero biases, shared by every implementation."""
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weights += [
            rng.uniform(-limit, limit, (fan_in, fan_out)).astype(dtype),
            np.zeros(fan_out, dtype),
        ]
    return weights


def random_batches(rng, sizes, batch, dtype, count):
    return [
        (
            rng.standard_normal((batch, sizes[0])).astype(dtype),
            rng.integers(0, sizes[-1], batch),
        )
        for _ in range(count)
    ]


def densekit_model(sizes, weights, dtype, policy=None):
    """``policy``: each Dense layer's dtype policy (e.g. "mixed_bfloat16"), or the model's."""
    stack = [layers.Input((sizes[0],))]
    stack += [layers.Dense(units, "relu", dtype=policy) for units in sizes[1:-1]]
    stack.append(layers.Dense(sizes[-1], "softmax", dtype=policy))
    model = densekit.Sequential(stack, dtype=dtype)
    model.set_weights(weights)
    # the peers' epsilon (torch's default), each peer running Keras's rule
    model.compile(optimizers.Adam(1e-3, epsilon=1e-8), "sparse_categorical_crossentropy")
    return model


def torch_model(sizes, weights, dtype):
    """A torch.nn.Sequential with these weights, its training step and its weights (Keras
    layout)."""
    torch = peers.torch
    modules = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(fan_in, fan_out, dtype=getattr(torch, dtype))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))
            linear.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        modules.append(linear)
        if i < len(sizes) - 2:
            modules.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*modules)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Keras's rule, which densekit's model layer follows, in torch's: epsilon / sqrt(1 -
    # beta_2^t) added after the bias correction is epsilon added before it
    group, count = optimizer.param_groups[0], [0]

    def step(x, y):
        count[0] += 1
        group["eps"] = 1e-8 / math.sqrt(1.0 - 0.999 ** count[0])
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def weights_now():
        out = []
        for module in modules:
            if isinstance(module, torch.nn.Linear):
                out += [module.weight.detach().numpy().T.copy(), module.bias.detach().numpy()]
        return out

    return model, step, weights_now


class NumpyMLP:
    """The textbook NumPy MLP with Adam, written as a user would, with Keras's rule (epsilon
    added to sqrt(v) before the bias correction), which densekit's model layer follows."""

    def __init__(self, weights, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.params = [w.copy() for w in weights]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, beta1, beta2, eps, 0

    def forward(self, x):
        acts = [x]
        for i in range(0, len(self.params), 2):
            z = acts[-1] @ self.params[i] + self.params[i + 1]
            acts.append(np.maximum(z, 0) if i + 2 < len(self.params) else z)
        return acts

    def predict(self, x):
        z = self.forward(x)[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def step(self, x, y):
        acts = self.forward(x)
        z = acts[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -np.log(p[np.arange(n), y]).mean()
        dz = p
        dz[np.arange(n), y] -= 1
        dz /= n
        grads = [None] * len(self.params)
        for i in range(len(self.params) - 2, -1, -2):
            grads[i] = acts[i // 2].T @ dz
            grads[i + 1] = dz.sum(axis=0)
            if i:
                dz = (dz @ self.params[i].T) * (acts[i // 2] > 0)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p_, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p_ -= step_size * m / (np.sqrt(v) + self.eps)
        return loss


# -- verification: float64 weights after a few steps ------------------------------------------


def weight_checks(sizes, batch, with_fit=False) -> dict[str, Callable[[], list[np.ndarray]]]:
    """Per library, a function giving the weights after VERIFY_STEPS float64 steps from the same
    weights on the same batches; densekit steps with train_on_batch, or with fit over those
    batches unshuffled when with_fit."""
    weights = initial_weights(sizes, "float64")
    batches = random_batches(np.random.default_rng(1), sizes, batch, "float64", VERIFY_STEPS)

    def densekit_weights():
        model = densekit_model(sizes, weights, "float64")
        if with_fit:
            x = np.concatenate([x for x, _ in batches])
            y = np.concatenate([y for _, y in batches])
            model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        else:
            for x, y in batches:
                model.train_on_batch(x, y)
        return model.get_weights()

    def numpy_weights():
        mlp = NumpyMLP(weights)
        for x, y in batches:
            mlp.step(x, y)
        return mlp.params

    checks = {DENSEKIT: densekit_weights, "numpy": numpy_weights}
    if peers.torch is not None:

        def torch_weights():
            _, step, weights_now = torch_model(sizes, weights, "float64")
            for x, y in batches:
                step(peers.torch.from_numpy(x), peers.torch.from_numpy(y))
            return weights_now()

        checks["torch"] = torch_weights
    return checks


def verified(check: Callable[[], Any], run: Callable[[], Any]) -> Callable[[], Any]:
    """A callable for the harness: its first call (the one the harness verifies) warms run()
    and returns check()'s outputs, computed now, or raises what check raised; later calls are
    run()."""
    try:
        outputs, error = check(), None
    except Exception as exc:  # reported by the harness at the first call
        outputs, error = None, exc
    first = [True]

    def call():
        if first[0]:
            first[0] = False
            if error is not None:
                raise error
            run()
            return outputs
        return run()

    return call


# -- cases -------------------------------------------------------------------------------------


def cycling(batches):
    """A callable giving the next batch of a fixed list on each call."""
    state = {"i": -1}

    def next_batch():
        state["i"] = (state["i"] + 1) % len(batches)
        return batches[state["i"]]

    return next_batch


def _case(name, sizes, batch, dtype, threads, work, formula, tolerance, densekit_impl, peer_impls):
    return Case(
        family=FAMILY,
        name=name,
        shape=shape_name(sizes, batch),
        dtype=dtype,
        threads=threads,
        work=work,
        unit="GFLOP/s",
        work_formula=formula,
        tolerance=tolerance,
        densekit=densekit_impl,
        peers=peer_impls,
    )


def step_case(sizes, batch, dtype, threads) -> Case:
    weights = initial_weights(sizes, dtype)
    batches = random_batches(np.random.default_rng(2), sizes, batch, dtype, STEP_BATCHES)
    checks = weight_checks(sizes, batch)

    model = densekit_model(sizes, weights, dtype)
    next_dk = cycling(batches)
    densekit_impl = Impl(
        DENSEKIT, verified(checks[DENSEKIT], lambda: model.train_on_batch(*next_dk()))
    )
    mlp = NumpyMLP(weights)
    next_np = cycling(batches)
    peer_impls = [Impl("numpy", verified(checks["numpy"], lambda: mlp.step(*next_np())))]
    if peers.torch is not None:
        _, torch_step, _ = torch_model(sizes, weights, dtype)
        torch_batches = [(peers.torch.from_numpy(x), peers.torch.from_numpy(y)) for x, y in batches]
        next_torch = cycling(torch_batches)
        peer_impls.append(
            Impl("torch", verified(checks["torch"], lambda: torch_step(*next_torch())))
        )
    case = _case(
        "step",
        sizes,
        batch,
        dtype,
        threads,
        step_flop(sizes, batch),
        STEP_FORMULA,
        WEIGHT_TOLERANCE,
        densekit_impl,
        peer_impls,
    )
    case.notes.append(f"checked: weights after {VERIFY_STEPS} float64 steps (train_on_batch)")
    return case


@contextlib.contextmanager
def kernels_replaced_by_no_ops() -> Iterator[None]:
    """Every kernel a step calls becomes a Python function that returns at once (a model built
    inside keeps them: its calls are bound when its step is planned)."""
    names = [name for name in KERNEL_NAMES if hasattr(densekit.kernels, name)]
    saved = {name: getattr(densekit.kernels, name) for name in names}
    result = (0.0, None)

    def no_op(*args, **kwargs):
        return result

    for name in names:
        setattr(densekit.kernels, name, no_op)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(densekit.kernels, name, function)


def _fit_step(model, batches):
    """The step fit's loop runs (``TrainingState.train_step``), on a plan whose buffers hold
    the first batch."""
    x, y = batches[0]
    state = model.training_state
    plan = state.load_batch(*state.dataset(x, y))
    return lambda: state.train_step(plan)


def breakdown_cases(sizes, batch, dtype, threads) -> Iterator[Case | Skip]:
    """densekit only: fit's step with real kernels, then train_on_batch and fit's step with
    every kernel a no-op (the model layer's own Python)."""
    weights = initial_weights(sizes, dtype)
    batches = random_batches(np.random.default_rng(2), sizes, batch, dtype, STEP_BATCHES)
    fit_step = _fit_step(densekit_model(sizes, weights, dtype), batches)
    with kernels_replaced_by_no_ops():
        model = densekit_model(sizes, weights, dtype)
        idle_step = _fit_step(model, batches)
    next_batch = cycling(batches)
    no_kernels = "none: the model layer's Python alone, every kernel call a no-op"
    parts = (
        ("fit step", fit_step, step_flop(sizes, batch), STEP_FORMULA),
        ("py train_on_batch", lambda: model.train_on_batch(*next_batch()), 0.0, no_kernels),
        ("py fit step", idle_step, 0.0, no_kernels),
    )
    for name, run, work, formula in parts:
        case = _case(
            name,
            sizes,
            batch,
            dtype,
            threads,
            work,
            formula,
            WEIGHT_TOLERANCE,
            Impl(DENSEKIT, run),
            [],
        )
        if not work:
            case.context = kernels_replaced_by_no_ops
        yield case


def epoch_case(sizes, batch, dtype, threads) -> Case:
    n = batch * EPOCH_STEPS
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    weights = initial_weights(sizes, dtype)
    checks = weight_checks(sizes, batch, with_fit=True)
    model = densekit_model(sizes, weights, dtype)
    mlp = NumpyMLP(weights)
    epoch_seed = iter(range(10**9))

    def densekit_epoch():
        return model.fit(x, y, batch_size=batch, epochs=1, verbose=0, seed=next(epoch_seed))

    def numpy_epoch():
        order = np.random.default_rng(next(epoch_seed)).permutation(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            mlp.step(x[rows], y[rows])

    peer_impls = [Impl("numpy", verified(checks["numpy"], numpy_epoch))]
    if peers.torch is not None:
        torch = peers.torch
        _, torch_step, _ = torch_model(sizes, weights, dtype)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def torch_epoch():
            order = torch.randperm(n)
            for start in range(0, n, batch):
                rows = order[start : start + batch]
                torch_step(xt[rows], yt[rows])

        peer_impls.append(Impl("torch", verified(checks["torch"], torch_epoch)))
    case = _case(
        "epoch",
        sizes,
        batch,
        dtype,
        threads,
        EPOCH_STEPS * step_flop(sizes, batch),
        f"{EPOCH_STEPS} steps x ({STEP_FORMULA})",
        WEIGHT_TOLERANCE,
        Impl(DENSEKIT, verified(checks[DENSEKIT], densekit_epoch)),
        peer_impls,
    )
    case.notes.append(
        f"an epoch is {EPOCH_STEPS} steps of batch n, shuffled; checked: weights after "
        f"{VERIFY_STEPS} float64 steps (densekit: fit unshuffled)"
    )
    return case


def predict_case(name, sizes, dtype, threads) -> Case:
    weights = initial_weights(sizes, dtype)
    model = densekit_model(sizes, weights, dtype)
    x = np.random.default_rng(4).standard_normal((1, sizes[0])).astype(dtype)
    mlp = NumpyMLP(weights)
    run = model.predict if name == "predict" else model.predict_on_batch
    peer_impls = [Impl("numpy", lambda: mlp.predict(x))]
    if peers.torch is not None:
        torch = peers.torch
        torch_net, _, _ = torch_model(sizes, weights, dtype)
        xt = torch.from_numpy(x)

        def torch_predict():
            with torch.inference_mode():
                return torch.softmax(torch_net(xt), dim=1)

        peer_impls.append(Impl("torch", torch_predict))
    return _case(
        name,
        sizes,
        1,
        dtype,
        threads,
        predict_flop(sizes, 1),
        "2n*sum(k*m)",
        PREDICT_TOLERANCE[dtype],
        Impl(DENSEKIT, lambda: run(x)),
        peer_impls,
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    # float32 (the targets) unless --dtype asks otherwise
    dtypes = settings.requested_dtypes or ("float32",)
    step_cases = QUICK_STEP_CASES if settings.quick else STEP_CASES
    epoch_cases = QUICK_EPOCH_CASES if settings.quick else STEP_CASES
    threads = settings.threads
    for dtype in dtypes:
        for sizes, batch in STEP_CASES:
            if (sizes, batch) not in step_cases:
                yield Skip(FAMILY, f"step {shape_name(sizes, batch)} {dtype}", "--quick")
                continue
            yield step_case(sizes, batch, dtype, threads)
            yield from breakdown_cases(sizes, batch, dtype, threads)
        for sizes, batch in STEP_CASES:
            if (sizes, batch) not in epoch_cases:
                yield Skip(FAMILY, f"epoch {shape_name(sizes, batch)} {dtype}", "--quick")
                continue
            yield epoch_case(sizes, batch, dtype, threads)
        for name in ("predict", "predict_on_batch"):
            yield predict_case(name, PREDICT_SIZES, dtype, threads)


# -- summary -----------------------------------------------------------------------------------


def _find(records: list[Record], name: str, shape: str, dtype: str = "float32") -> Record | None:
    for record in records:
        if (record.family, record.name, record.shape, record.dtype) == (FAMILY, name, shape, dtype):
            return record
    return None


def _us(record: Record | None) -> float | None:
    if record is None or DENSEKIT not in record.timings:
        return None
    return record.timings[DENSEKIT].median * 1e6


def summarize(records: list[Record], peaks: dict | None = None) -> list[str]:
    if not any(record.family == FAMILY for record in records):
        return []
    lines = ["training targets (densekit speed / torch eager speed, float32):"]
    for name, shape, target in TARGETS:
        record = _find(records, name, shape)
        ratio = None if record is None else record.ratio("torch")
        if ratio is None:
            verdict = "not measured"
        else:
            verdict = f"{ratio:.2f}x, {'met' if ratio >= target else 'MISSED'}"
            if record.failed:
                verdict += " (verification failed)"
        lines.append(f"  {name:<8} {shape:<18} target >= {target:g}x: {verdict}")
    overhead = []
    for record in records:
        if record.family != FAMILY or record.name != "step":
            continue
        step = _us(record)
        tob = _us(_find(records, "py train_on_batch", record.shape, record.dtype))
        fit = _us(_find(records, "py fit step", record.shape, record.dtype))
        if step is None or tob is None or fit is None:
            continue
        overhead.append(
            f"  {record.shape:<18} {record.dtype:<8} train_on_batch {tob:6.1f} us "
            f"({100 * tob / step:4.1f}% of its {step:.1f} us step), fit's step {fit:6.1f} us"
        )
    if overhead:
        lines.append("densekit per-step Python overhead (every kernel call a no-op):")
        lines += overhead
    return lines


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
