"""A/B timing of two builds of densekit._core over every kernel family, in one process.

The two builds are loaded side by side (each from a copy, under a module name of its own) and
timed in rounds that alternate which goes first, so that both see the same machine: on a
shared machine two separate runs differ by several per cent, two contenders in one process by
about one. Per shape it reports the median call time of each and B's speed over A's
(B/A > 1: B is faster). For the matrix-product engine's tuning, tools/ab.py is the finer tool.

    python -m tools.ab_kernels --a-so old/_core.so --b-so new/_core.so [--threads 2]
    python -m tools.ab_kernels --a-so old.so --b-so new.so --only dense,loss --rounds 10

Families: dense, activation, loss, keras_loss (Keras's further losses), optim.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np


def load(path: str, label: str):
    """A copy of the extension at `path` under the module name densekit_ab_<label>._core."""
    folder = tempfile.mkdtemp(prefix="densekit-ab-")
    copy = os.path.join(folder, os.path.basename(path))
    shutil.copy(path, copy)
    name = f"densekit_ab_{label}._core"  # CPython keeps one extension module per name
    loader = importlib.machinery.ExtensionFileLoader(name, copy)
    spec = importlib.util.spec_from_file_location(name, copy, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def cases(threads: int) -> list[tuple[str, str, Callable]]:
    """(family, label, make) with make(core) returning a no-argument call to time."""
    rng = np.random.default_rng(0)
    out = []

    def arr(*shape, scale=1.0, dtype=np.float32):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    for n, k, m in [(1024, 1024, 1024), (8192, 512, 512), (256, 784, 256), (64, 784, 256)]:
        x, w, b = arr(n, k), arr(k, m, scale=k**-0.5), arr(m)
        y = np.empty((n, m), np.float32)
        for act in ("relu", "gelu", "tanh", "sigmoid", "softmax"):
            if act != "relu" and n == 8192:
                continue

            def make(core, x=x, w=w, b=b, y=y, act=act):
                return lambda: core.dense_forward(x, w, b, act, out=y, num_threads=threads)

            out.append(("dense", f"forward {n}x{k}x{m} {act}", make))
        dy, preact = arr(n, m), arr(n, m)
        dx, dw, db = np.empty((n, k), np.float32), np.empty((k, m), np.float32), np.empty(m)
        db = db.astype(np.float32)
        for act in ("relu", "gelu"):

            def make(core, dy=dy, x=x, w=w, preact=preact, dx=dx, dw=dw, db=db, act=act):
                return lambda: core.dense_backward(
                    dy, x, w, preact=preact, activation=act, dx_out=dx, dw_out=dw, db_out=db,
                    num_threads=threads,
                )  # fmt: skip

            out.append(("dense", f"backward {n}x{k}x{m} {act}", make))
    x64, w64 = arr(512, 512, dtype=np.float64), arr(512, 512, scale=512**-0.5, dtype=np.float64)
    for act in ("relu", "gelu", "tanh"):

        def make(core, act=act):
            return lambda: core.dense_forward(x64, w64, None, act, num_threads=threads)

        out.append(("dense", f"forward 512^3 float64 {act}", make))
    for dtype in (np.float32, np.float64):
        z = arr(1 << 20, scale=3.0, dtype=dtype)
        y = np.empty_like(z)
        dy = arr(1 << 20, dtype=dtype)
        name = np.dtype(dtype).name
        for act in ("relu", "elu", "sigmoid", "tanh", "softplus", "gelu", "gelu_tanh"):

            def make(core, z=z, y=y, act=act):
                return lambda: core.activation_forward(z, act, out=y, num_threads=threads)

            out.append(("activation", f"forward 1M {name} {act}", make))

            def make_back(core, z=z, dy=dy, y=y, act=act):
                return lambda: core.activation_backward(dy, act, z=z, out=y, num_threads=threads)

            out.append(("activation", f"backward 1M {name} {act}", make_back))
        for act in ("sigmoid", "tanh", "relu6", "hard_sigmoid", "exponential"):
            y_act = (z / 3 + 0.5).astype(dtype)  # an output in the range of each activation
            dz = np.empty_like(z)

            def make_back_y(core, y_act=y_act, dy=dy, dz=dz, act=act):
                return lambda: core.activation_backward(
                    dy, act, y=y_act, out=dz, num_threads=threads
                )

            out.append(("activation", f"backward from y 1M {name} {act}", make_back_y))
        rows = arr(4096, 256, dtype=dtype)
        rows_out = np.empty_like(rows)

        def make_softmax(core, rows=rows, rows_out=rows_out):
            return lambda: core.activation_forward(
                rows, "softmax", out=rows_out, num_threads=threads
            )

        out.append(("activation", f"softmax 4096x256 {name}", make_softmax))
    for n, c in [(8192, 10), (8192, 1000), (512, 32000)]:
        logits = arr(n, c, scale=3.0)
        labels = rng.integers(0, c, n)
        grad = np.empty_like(logits)

        def make(core, logits=logits, labels=labels, grad=grad):
            return lambda: core.softmax_cross_entropy(
                logits, labels, grad_out=grad, num_threads=threads
            )

        out.append(("loss", f"softmax_cross_entropy {n}x{c}", make))
    pred, target = arr(1 << 20), arr(1 << 20)
    binary = (rng.random(1 << 20) > 0.5).astype(np.float32)
    grad = np.empty_like(pred)
    for loss, tgt in (("mse", target), ("huber", target), ("sigmoid_binary_cross_entropy", binary)):

        def make(core, loss=loss, tgt=tgt):
            fn = getattr(core, loss)
            return lambda: fn(pred, tgt, grad_out=grad, num_threads=threads)

        out.append(("loss", f"{loss} 1M", make))
    out += keras_loss_cases(rng, threads)
    param, g = arr(1 << 21), arr(1 << 21)
    m1, v1 = np.zeros_like(param), np.zeros_like(param)

    def make_adam(core):
        return lambda: core.adam_step(param, g, m1, v1, step=3, lr=1e-9, num_threads=threads)

    out.append(("optim", "adam_step 2M", make_adam))
    buf1, sq1, avg1 = np.zeros_like(param), np.zeros_like(param), np.zeros_like(param)

    def make_sgd(core):
        return lambda: core.sgd_step(
            param, g, lr=1e-9, momentum=0.9, velocity=buf1, nesterov=True, num_threads=threads
        )

    def make_rmsprop(core):
        return lambda: core.rmsprop_step(
            param,
            g,
            sq1,
            lr=1e-9,
            momentum=0.5,
            velocity=buf1,
            centered=True,
            grad_avg=avg1,
            num_threads=threads,
        )

    out.append(("optim", "sgd_step nesterov 2M", make_sgd))
    out.append(("optim", "rmsprop_step centered momentum 2M", make_rmsprop))
    return out


def loss_target(rng, kind: str, n: int, d: int) -> np.ndarray:
    """A float64 (n, d) target of the given kind."""
    if kind == "real":
        return rng.standard_normal((n, d))
    if kind == "positive":
        return np.abs(rng.standard_normal((n, d)))
    if kind == "probabilities":
        return rng.dirichlet(np.ones(d), n)
    if kind == "signs":
        return 2.0 * rng.integers(0, 2, (n, d)) - 1
    if kind == "binary":
        return rng.integers(0, 2, (n, d)).astype(np.float64)
    return np.eye(d)[rng.integers(0, d, n)]  # one_hot


def keras_loss_cases(rng, threads: int) -> list[tuple[str, str, Callable]]:
    """Keras's further losses (family keras_loss), value and gradient: the elementwise ones on
    (16384, 64), the row ones also on (65536, 10), float32 and float64."""
    out = []
    elementwise = {
        "mape": "real",
        "msle": "positive",
        "poisson": "positive",
        "kl_divergence": "probabilities",
        "hinge": "signs",
        "squared_hinge": "signs",
        "sigmoid_focal_cross_entropy": "binary",
    }
    rows = {
        "categorical_hinge": "one_hot",
        "cosine_similarity": "real",
        "softmax_focal_cross_entropy": "one_hot",
    }
    for dtype in (np.float32, np.float64):
        for name, kind in {**elementwise, **rows}.items():
            shapes = [(16384, 64)] + ([(65536, 10)] if name in rows else [])
            for n, d in shapes:
                pred = (rng.standard_normal((n, d)) * 2).astype(dtype)
                if kind in ("positive", "probabilities"):
                    pred = np.abs(pred) / (d if kind == "probabilities" else 1)
                target = loss_target(rng, kind, n, d).astype(dtype)
                grad = np.empty_like(pred)

                def make(core, name=name, pred=pred, target=target, grad=grad):
                    fn = getattr(core, name)
                    return lambda: fn(pred, target, grad_out=grad, num_threads=threads)

                label = f"{name} {n}x{d} {np.dtype(dtype).name}"
                out.append(("keras_loss", label, make))
    return out


def timed(fn: Callable, seconds: float) -> list[float]:
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-so", required=True)
    parser.add_argument("--b-so", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=0.05, help="per contender per round")
    parser.add_argument("--only", default="", help="comma-separated families")
    args = parser.parse_args()
    cores = {"A": load(args.a_so, "a"), "B": load(args.b_so, "b")}
    families = set(args.only.split(",")) if args.only else None
    ratios = []
    for family, label, make in cases(args.threads):
        if families and family not in families:
            continue
        calls = {name: make(core) for name, core in cores.items()}
        times = {name: [] for name in cores}
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                times[name] += timed(calls[name], args.seconds)
        a, b = (float(np.median(times[name])) for name in ("A", "B"))
        ratios.append(a / b)
        print(f"{family:>10} {label:<46} A {a * 1e3:9.3f} ms  B {b * 1e3:9.3f} ms  B/A {a / b:.3f}")
    if ratios:
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric mean B/A over {len(ratios)} cases: {geo:.3f}; min {min(ratios):.3f}")


if __name__ == "__main__":
    main()
