"""Training benchmarks of the model layer: densekit vs torch eager vs a hand-written NumPy MLP.

Cases (float32, relu hidden layers, softmax output, sparse categorical cross-entropy, Adam):
- one training step (forward + backward + Adam) of 784-256-128-10 at batch 64 and 512 and of
  the tiny 64-32-10 at batch 32, where per-call overhead dominates;
- one epoch of 100 steps (fit with shuffling vs the equivalent torch / NumPy loops);
- batch-1 predict latency of 784-256-128-10.
Every implementation starts from the same weights and sees the same batches; before timing,
each peer's weights after 3 steps in float64 are checked against densekit's. Timing is
interleaved round-robin in one process (order rotated each round, one untimed call before
each sample), medians reported. densekit's per-step Python overhead is its step time minus
the sum of its kernel calls, each timed on its own.

Run: ``python -m bench.train`` or ``python bench/train.py`` (``--quick``, ``--threads N``,
``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time

# OpenBLAS's idle workers spin ~0.1 s after each call and slow whichever library runs next on
# a 2-core machine by 10x (see bench/__init__.py); set before NumPy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")

import numpy as np

import densekit
from densekit import layers, optimizers

STEP_CASES = [((784, 256, 128, 10), 64), ((784, 256, 128, 10), 512), ((64, 32, 10), 32)]
TARGETS = {  # the speed-up targets over torch eager
    ("step", (784, 256, 128, 10), 64): 3.0,
    ("step", (64, 32, 10), 32): 10.0,
    ("predict", (784, 256, 128, 10), 1): 4.0,
}
EPOCH_STEPS = 100


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


def densekit_model(sizes, weights, dtype):
    stack = [layers.Input((sizes[0],))]
    stack += [layers.Dense(units, "relu") for units in sizes[1:-1]]
    stack.append(layers.Dense(sizes[-1], "softmax"))
    model = densekit.Sequential(stack, dtype=dtype)
    model.set_weights(weights)
    # torch's epsilon, so that both run the same rule
    model.compile(optimizers.Adam(1e-3, epsilon=1e-8), "sparse_categorical_crossentropy")
    return model


def torch_model(sizes, weights, dtype):
    import torch

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

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def weights_now():
        out = []
        for module in modules:
            if isinstance(module, torch.nn.Linear):
                out += [
                    module.weight.detach().numpy().T.copy(),
                    module.bias.detach().numpy().copy(),
                ]
        return out

    return model, step, weights_now


class NumpyMLP:
    """The textbook NumPy MLP with Adam (torch's rule), written as a user would."""

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
        step_size = self.lr / (1 - b1**self.t)
        root = math.sqrt(1 - b2**self.t)
        for p_, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p_ -= step_size * m / (np.sqrt(v) / root + self.eps)
        return loss


# -- verification ----------------------------------------------------------------------------


def verify(sizes, batch, steps=3):
    """Max relative difference of the weights after ``steps`` float64 steps, per peer."""
    rng = np.random.default_rng(1)
    weights = initial_weights(sizes, "float64")
    batches = [
        (rng.standard_normal((batch, sizes[0])), rng.integers(0, sizes[-1], batch))
        for _ in range(steps)
    ]
    model = densekit_model(sizes, weights, "float64")
    reference = NumpyMLP(weights)
    results = {}
    for x, y in batches:
        model.train_on_batch(x, y)
        reference.step(x, y)
    mine = model.get_weights()
    results["numpy"] = max(rel(a, b) for a, b in zip(mine, reference.params))
    with contextlib.suppress(ImportError):
        import torch

        _, step, weights_now = torch_model(sizes, weights, "float64")
        for x, y in batches:
            step(torch.from_numpy(x), torch.from_numpy(y))
        results["torch"] = max(rel(a, b) for a, b in zip(mine, weights_now()))
    return results


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# -- timing ------------------------------------------------------------------------------------


def time_interleaved(impls: dict, min_sample_s: float, repeats: int) -> dict:
    """Median seconds per call of each zero-argument callable, timed round-robin."""
    per_call = {}
    for name, run in impls.items():
        run()  # warm-up
        start = time.perf_counter()
        run()
        per_call[name] = time.perf_counter() - start
    calls = {name: max(1, math.ceil(min_sample_s / max(t, 1e-9))) for name, t in per_call.items()}
    samples = {name: [] for name in impls}
    names = list(impls)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                run, count = impls[name], calls[name]
                run()  # so the previous library's spinning threads are not counted here
                start = time.perf_counter()
                for _ in range(count):
                    run()
                samples[name].append((time.perf_counter() - start) / count)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


def cycling(batches):
    """A callable giving the next batch of a fixed list on each call."""
    state = {"i": -1}

    def next_batch():
        state["i"] = (state["i"] + 1) % len(batches)
        return batches[state["i"]]

    return next_batch


def bench_step(sizes, batch, timing, have_torch):
    rng = np.random.default_rng(2)
    weights = initial_weights(sizes, "float32")
    batches = [
        (
            rng.standard_normal((batch, sizes[0]), dtype=np.float32),
            rng.integers(0, sizes[-1], batch),
        )
        for _ in range(8)
    ]
    model = densekit_model(sizes, weights, "float32")
    model.train_on_batch(*batches[0])
    plan = model._workspace("train", batch).plan(batch, False)
    np.copyto(plan.x, batches[0][0])
    np.copyto(plan.y, batches[0][1])
    update = model.optimizer._update
    kernel_calls = {f"forward {i}": call for i, call in enumerate(plan.forward)}
    kernel_calls["loss"] = plan.loss
    kernel_calls.update({f"backward {i}": call for i, call in enumerate(plan.backward)})
    kernel_calls["adam"] = lambda: update(step=10, lr=1e-3)

    next_dk = cycling(batches)
    impls = {
        "densekit": lambda: model.train_on_batch(*next_dk()),
        "densekit step": lambda: model._train_step(plan),
    }
    numpy_mlp = NumpyMLP(weights)
    next_np = cycling(batches)
    impls["numpy"] = lambda: numpy_mlp.step(*next_np())
    if have_torch:
        import torch

        _, torch_step, _ = torch_model(sizes, weights, "float32")
        torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
        next_torch = cycling(torch_batches)
        impls["torch"] = lambda: torch_step(*next_torch())
    times = time_interleaved(impls, timing["min_sample_s"], timing["repeats"])
    kernels = time_interleaved(kernel_calls, timing["min_sample_s"], timing["repeats"])
    times["kernels"] = sum(kernels.values())
    times.update(python_overhead(sizes, batches, timing))
    return times


KERNEL_NAMES = [
    "dense_forward",
    "dense_backward",
    "activation_forward",
    "softmax_cross_entropy",
    "adam_step",
    "clip_by_global_norm",
]


@contextlib.contextmanager
def kernels_replaced_by_no_ops():
    """Every kernel a step calls becomes a Python function that returns at once."""
    saved = {name: getattr(densekit.kernels, name) for name in KERNEL_NAMES}
    result = (0.0, None)

    def no_op(*args, **kwargs):
        return result

    for name in KERNEL_NAMES:
        setattr(densekit.kernels, name, no_op)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(densekit.kernels, name, function)


def python_overhead(sizes, batches, timing):
    """Seconds per step of the model layer's own Python: train_on_batch and the fit loop's
    step with every kernel call replaced by a no-op (what is left is the arranging)."""
    batch = batches[0][0].shape[0]
    with kernels_replaced_by_no_ops():
        model = densekit_model(sizes, initial_weights(sizes, "float32"), "float32")
        model.train_on_batch(*batches[0])
        plan = model._workspace("train", batch).plan(batch, False)
        next_batch = cycling(batches)
        impls = {
            "python train_on_batch": lambda: model.train_on_batch(*next_batch()),
            "python step": lambda: model._train_step(plan),
        }
        return time_interleaved(impls, timing["min_sample_s"], timing["repeats"])


def bench_epoch(sizes, batch, timing, have_torch):
    n = batch * EPOCH_STEPS
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n)
    weights = initial_weights(sizes, "float32")
    model = densekit_model(sizes, weights, "float32")
    numpy_mlp = NumpyMLP(weights)
    epoch_seed = iter(range(10**9))

    def numpy_epoch():
        order = np.random.default_rng(next(epoch_seed)).permutation(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            numpy_mlp.step(x[rows], y[rows])

    impls = {
        "densekit": lambda: model.fit(
            x, y, batch_size=batch, epochs=1, verbose=0, seed=next(epoch_seed)
        ),
        "numpy": numpy_epoch,
    }
    if have_torch:
        import torch

        _, torch_step, _ = torch_model(sizes, weights, "float32")
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def torch_epoch():
            order = torch.randperm(n)
            for start in range(0, n, batch):
                rows = order[start : start + batch]
                torch_step(xt[rows], yt[rows])

        impls["torch"] = torch_epoch
    return time_interleaved(impls, timing["min_sample_s"], max(3, timing["repeats"] // 3))


def bench_predict(sizes, timing, have_torch):
    weights = initial_weights(sizes, "float32")
    model = densekit_model(sizes, weights, "float32")
    x = np.random.default_rng(4).standard_normal((1, sizes[0]), dtype=np.float32)
    numpy_mlp = NumpyMLP(weights)
    impls = {
        "densekit": lambda: model.predict(x),
        "densekit predict_on_batch": lambda: model.predict_on_batch(x),
        "numpy": lambda: numpy_mlp.predict(x),
    }
    expected = numpy_mlp.predict(x)
    assert rel(model.predict(x), expected) < 1e-5, "predict disagrees with NumPy"
    if have_torch:
        import torch

        torch_net, _, _ = torch_model(sizes, weights, "float32")
        xt = torch.from_numpy(x)

        def torch_predict():
            with torch.inference_mode():
                return torch.softmax(torch_net(xt), dim=1)

        assert rel(torch_predict().numpy(), expected) < 1e-5, "torch disagrees with NumPy"
        impls["torch"] = torch_predict
    return time_interleaved(impls, timing["min_sample_s"], timing["repeats"])


# -- report ------------------------------------------------------------------------------------

HEADER = (
    f"{'case':34} {'densekit':>9} {'torch':>9} {'numpy':>9} {'vs torch':>9} {'vs numpy':>9} "
    f"{'target':>7}"
)
STEP_COLUMNS = ["step", "kernels", "overhead", "py tob", "py step"]
STEP_NOTE = """\
densekit = train_on_batch (input checks, copy into the step's buffers, the step); step = the
fit loop's step on buffers already filled; kernels = the sum of the step's kernel calls, each
timed alone; overhead = densekit - kernels (it includes the cache misses a whole step has and
a kernel repeated alone does not); py tob / py step = train_on_batch / step with every kernel
replaced by a Python no-op: the model layer's own Python per step."""


def row(label, times, scale, mine="densekit", target=None, extra=()):
    """One table line: times in microseconds (scale 1e6) or milliseconds (1e3)."""

    def cell(seconds):
        return f"{seconds * scale:9.1f}" if seconds is not None else f"{'-':>9}"

    def speedup(peer):
        value = times[peer] / times[mine] if peer in times else None
        return f"{value:8.2f}x" if value is not None else f"{'-':>9}"

    target_text = f"{target}x" if target else ""
    cells = [cell(times[mine]), cell(times.get("torch")), cell(times.get("numpy"))]
    cells += [speedup("torch"), speedup("numpy"), f"{target_text:>7}"]
    cells += [cell(value) for value in extra]
    return (f"{label:34} " + " ".join(cells)).rstrip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="densekit training benchmarks vs torch and NumPy")
    parser.add_argument("--threads", type=int, default=None, help="threads for every library")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    args = parser.parse_args(argv)
    threads = args.threads or densekit.get_num_threads()
    densekit.set_num_threads(threads)
    limits = contextlib.nullcontext()
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(threads)
    versions = f"densekit {densekit.__version__}, numpy {np.__version__}"
    try:
        import torch

        torch.set_num_threads(threads)
        have_torch = True
        versions += f", torch {torch.__version__}"
    except ImportError:
        have_torch = False
    timing = {"min_sample_s": 0.03, "repeats": 21}
    if args.quick:
        timing = {"min_sample_s": 0.01, "repeats": 7}
    results = {"threads": threads, "versions": versions, "cases": []}
    print(f"{versions}; {threads} threads")

    with limits:
        print("\nverification: relative weight difference after 3 float64 Adam steps")
        for sizes, batch in STEP_CASES:
            checks = verify(sizes, batch)
            shape = "-".join(map(str, sizes))
            print(
                f"  {shape} batch {batch}: " + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
            )
            if any(v > 1e-9 for v in checks.values()):
                print("  VERIFICATION FAILED")
                return 1

        print("\ntraining step (us, median)")
        print(HEADER + "".join(f" {name:>9}" for name in STEP_COLUMNS))
        for sizes, batch in STEP_CASES:
            times = bench_step(sizes, batch, timing, have_torch)
            label = "-".join(map(str, sizes)) + f" batch {batch}"
            extra = (
                times["densekit step"],
                times["kernels"],
                times["densekit"] - times["kernels"],
                times["python train_on_batch"],
                times["python step"],
            )
            target = TARGETS.get(("step", sizes, batch))
            print(row(label, times, 1e6, target=target, extra=extra))
            results["cases"].append(
                {"case": "step", "sizes": sizes, "batch": batch, "seconds": times, "target": target}
            )

        print(f"\none epoch of {EPOCH_STEPS} steps (ms, median; densekit: fit with shuffling)")
        print(HEADER)
        for sizes, batch in STEP_CASES:
            times = bench_epoch(sizes, batch, timing, have_torch)
            print(row("-".join(map(str, sizes)) + f" batch {batch}", times, 1e3))
            results["cases"].append(
                {"case": "epoch", "sizes": sizes, "batch": batch, "seconds": times}
            )

        print("\nbatch-1 predict (us, median)")
        print(HEADER)
        sizes = (784, 256, 128, 10)
        times = bench_predict(sizes, timing, have_torch)
        print(row("784-256-128-10 predict", times, 1e6, target=4.0))
        print(row("784-256-128-10 predict_on_batch", times, 1e6, mine="densekit predict_on_batch"))
        results["cases"].append(
            {"case": "predict", "sizes": sizes, "batch": 1, "seconds": times, "target": 4.0}
        )

    print("\n" + STEP_NOTE)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1, default=list)
    return 0


if __name__ == "__main__":
    sys.exit(main())
