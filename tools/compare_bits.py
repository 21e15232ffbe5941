"""Bitwise comparison of two builds of densekit._core, for refactors that must not change a bit.

Each build is loaded in its own process, once per instruction set (DENSEKIT_ISA is read once,
at import), and runs a fixed set of calls covering every kernel: dense forward (every
activation, bias or none, preact_out, leading axes, shapes on the small, wide-row and blocked
paths), packed weights, dense backward (every activation, dx/db on or off, accumulate),
DenseChain, activations forward and backward (special values included), every loss (with and
without its parameters) and reduction, every optimizer step, clip_by_global_norm and
take_rows, in float32 and float64, on 1 and 3 threads. The outputs (and the messages of calls
that raise) of the two builds must be identical byte for byte.

    python -m tools.compare_bits --a-so /path/to/old/_core.so --b-so /path/to/new/_core.so
    python -m tools.compare_bits --a-so old.so --b-so new.so --isa avx2,portable
    python -m tools.compare_bits --a-so old.so --b-so new.so --shared-only  # B adds names

Exits 1 and lists the differing outputs (with their largest difference in ulp) when any differ.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ISAS = ("avx512", "avx2", "portable")
DTYPES = (np.float32, np.float64)
THREADS = (1, 3)
# (n, k, m): empty, single, the small path, wide rows (n <= 4), primes, several k blocks and
# column blocks, a partial row tile.
DENSE_SHAPES = [
    (0, 5, 3),
    (1, 1, 1),
    (3, 0, 4),
    (2, 37, 130),
    (4, 61, 45),
    (7, 13, 29),
    (37, 61, 45),
    (131, 257, 97),
    (61, 613, 515),
]


def load(path: str):
    """The extension at `path`, loaded from a copy under a module name of its own."""
    folder = tempfile.mkdtemp(prefix="densekit-bits-")
    copy = os.path.join(folder, os.path.basename(path))
    shutil.copy(path, copy)
    name = "densekit_bits._core"
    loader = importlib.machinery.ExtensionFileLoader(name, copy)
    spec = importlib.util.spec_from_file_location(name, copy, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def special_values(dtype) -> np.ndarray:
    """Values where activations go wrong: tails, overflow and underflow edges, inf, NaN."""
    big = np.finfo(dtype).max
    tiny = np.finfo(dtype).tiny
    grid = np.linspace(-120.0, 120.0, 997)
    edges = [0.0, -0.0, tiny, -tiny, tiny / 8, 1e-30, -1e-30, 87.3, -87.3, 88.7, -88.8, 103.9]
    edges += [-104.0, 708.3, -708.4, 709.8, -745.2, 1e10, -1e10, big, -big, np.inf, -np.inf]
    with np.errstate(over="ignore"):
        values = np.concatenate([grid, np.array(edges), [np.nan]]).astype(dtype)
    return values.reshape(1, -1)


class Recorder:
    """Collects named outputs; a call that raises records its exception type and message."""

    def __init__(self):
        self.out: dict[str, np.ndarray] = {}

    def put(self, name: str, value) -> None:
        if value is None:
            return
        if isinstance(value, tuple):
            for i, part in enumerate(value):
                self.put(f"{name}[{i}]", part)
            return
        assert name not in self.out, name
        self.out[name] = np.array(value, copy=True)

    def call(self, name: str, fn, *args, **kwargs) -> None:
        try:
            self.put(name, fn(*args, **kwargs))
        except Exception as error:  # the message is part of the behaviour
            self.out[name + "!"] = np.array(f"{type(error).__name__}: {error}")


def run_activations(core, rec: Recorder, rng, dtype) -> None:
    name = np.dtype(dtype).name
    inputs = {
        "rows": (rng.standard_normal((5, 37)) * 4).astype(dtype),
        "long": (rng.standard_normal((3, 1031)) * 6).astype(dtype),
        "special": special_values(dtype),
    }
    for act in core.ACTIVATIONS:
        alphas = [None, 0.3] if act in ("leaky_relu", "elu") else [None]
        for alpha in alphas:
            for label, z in inputs.items():
                for threads in THREADS:
                    tag = f"act/{name}/{act}/{alpha}/{label}/t{threads}"
                    with np.errstate(all="ignore"):
                        y = core.activation_forward(z, act, alpha=alpha, num_threads=threads)
                    rec.put(tag + "/y", y)
                    dy = np.cos(np.arange(z.size, dtype=dtype)).reshape(z.shape)
                    rec.call(
                        tag + "/dz_from_z",
                        core.activation_backward,
                        dy,
                        act,
                        z=z,
                        alpha=alpha,
                        num_threads=threads,
                    )
                    rec.call(
                        tag + "/dz_from_y",
                        core.activation_backward,
                        dy,
                        act,
                        y=y,
                        alpha=alpha,
                        num_threads=threads,
                    )


def run_dense(core, rec: Recorder, rng, dtype) -> None:
    name = np.dtype(dtype).name
    for n, k, m in DENSE_SHAPES:
        x = rng.standard_normal((n, k)).astype(dtype)
        w = (rng.standard_normal((k, m)) / np.sqrt(max(k, 1))).astype(dtype)
        b = rng.standard_normal(m).astype(dtype)
        dy = rng.standard_normal((n, m)).astype(dtype)
        packed = core.pack_weights(w, num_threads=2)
        for act in core.ACTIVATIONS:
            for threads in THREADS:
                tag = f"dense/{name}/{n}x{k}x{m}/{act}/t{threads}"
                preact = np.empty((n, m), dtype)
                y = core.dense_forward(x, w, b, act, preact_out=preact, num_threads=threads)
                rec.put(tag + "/y", y)
                rec.put(tag + "/preact", preact)
                rec.put(tag + "/y_nobias", core.dense_forward(x, w, None, act, num_threads=threads))
                rec.put(
                    tag + "/y_packed", core.dense_forward(x, packed, b, act, num_threads=threads)
                )
                rec.call(
                    tag + "/back_z",
                    core.dense_backward,
                    dy,
                    x,
                    w,
                    preact=preact,
                    activation=act,
                    num_threads=threads,
                )
                rec.call(
                    tag + "/back_y",
                    core.dense_backward,
                    dy,
                    x,
                    w,
                    y=y,
                    activation=act,
                    need_dx=False,
                    num_threads=threads,
                )
                dw = np.full((k, m), 0.5, dtype)
                db = np.full(m, -0.25, dtype)
                rec.call(
                    tag + "/back_acc",
                    core.dense_backward,
                    dy,
                    x,
                    w,
                    y=y,
                    preact=preact,
                    activation=act,
                    need_db=True,
                    dw_out=dw,
                    db_out=db,
                    accumulate=True,
                    num_threads=threads,
                )
        if n > 0:
            x3 = rng.standard_normal((2, n, k)).astype(dtype)
            rec.put(f"dense3d/{name}/{n}x{k}x{m}", core.dense_forward(x3, w, b, "gelu"))
        for alpha in (0.2, -0.1):
            rec.put(
                f"dense_alpha/{name}/{n}x{k}x{m}/{alpha}",
                core.dense_forward(x, w, b, "leaky_relu", alpha=alpha),
            )


def run_chain(core, rec: Recorder, rng, dtype) -> None:
    name = np.dtype(dtype).name
    widths = [37, 64, 29, 10]
    steps = []
    for i in range(len(widths) - 1):
        w = (rng.standard_normal((widths[i], widths[i + 1])) / 6).astype(dtype)
        b = rng.standard_normal(widths[i + 1]).astype(dtype)
        steps.append((w, b, ("gelu", "leaky_relu", "linear")[i]))
    steps.append((None, None, "softmax"))
    chain = core.DenseChain(steps)
    for rows in (0, 1, 5, 300):
        x = rng.standard_normal((rows, widths[0])).astype(dtype)
        for threads in THREADS:
            rec.put(f"chain/{name}/{rows}/t{threads}", chain(x, num_threads=threads))


def run_losses(core, rec: Recorder, rng, dtype) -> None:
    name = np.dtype(dtype).name
    shapes = [(0, 3), (1, 1), (37, 10), (5, 1500), (130, 7)]
    for n, c in shapes:
        pred = (rng.standard_normal((n, c)) * 3).astype(dtype)
        target = rng.standard_normal((n, c)).astype(dtype)
        probs = rng.random((n, c)).astype(dtype)
        probs /= np.maximum(probs.sum(axis=1, keepdims=True), 1e-3)
        labels = rng.integers(0, c, n).astype(np.int64)
        binary = (rng.random((n, c)) > 0.5).astype(dtype)
        weight = rng.random(n).astype(dtype)
        if n > 1:
            pred[0, 0] = 80.0
            pred[-1, -1] = -95.0
        positive = np.abs(pred)
        signs = 2 * binary - 1
        one_hot = np.eye(c, dtype=dtype)[labels] if c else np.zeros((n, 0), dtype)
        cases = {
            "mse": (core.mse, target, {}),
            "mae": (core.mae, target, {}),
            "huber": (core.huber, target, {"delta": 0.7}),
            "sce_labels": (core.softmax_cross_entropy, labels, {"label_smoothing": 0.1}),
            "sce_labels32": (core.softmax_cross_entropy, labels.astype(np.int32), {}),
            "sce_probs": (core.softmax_cross_entropy, probs, {}),
            "sbce": (core.sigmoid_binary_cross_entropy, binary, {"label_smoothing": 0.05}),
            "sbce_plain": (core.sigmoid_binary_cross_entropy, binary, {}),
            "mape": (core.mape, target, {}),
            "msle": (core.msle, np.abs(target), {}),
            "log_cosh": (core.log_cosh, target, {}),
            "poisson": (core.poisson, np.abs(target), {}),
            "kl_divergence": (core.kl_divergence, probs, {}),
            "hinge": (core.hinge, signs, {}),
            "squared_hinge": (core.squared_hinge, signs, {}),
            "categorical_hinge": (core.categorical_hinge, one_hot, {}),
            "cosine_similarity": (core.cosine_similarity, target, {}),
            "focal": (core.sigmoid_focal_cross_entropy, binary, {}),
            "focal_balanced": (
                core.sigmoid_focal_cross_entropy,
                binary,
                {"gamma": 1.5, "alpha": 0.3, "apply_class_balancing": True, "label_smoothing": 0.1},
            ),
            "softmax_focal": (core.softmax_focal_cross_entropy, one_hot, {}),
            "softmax_focal_smooth": (
                core.softmax_focal_cross_entropy,
                probs,
                {"gamma": 0.5, "alpha": 1.0, "label_smoothing": 0.1},
            ),
        }
        for case, (fn, tgt, extra) in cases.items():
            pred_case = positive if case in ("poisson", "kl_divergence", "msle") else pred
            for reduction in ("mean", "sum", "none"):
                for weighted in (False, True):
                    for threads in THREADS:
                        tag = f"loss/{name}/{n}x{c}/{case}/{reduction}/{weighted}/t{threads}"
                        rec.call(
                            tag,
                            fn,
                            pred_case,
                            tgt,
                            reduction=reduction,
                            sample_weight=weight if weighted else None,
                            num_threads=threads,
                            **extra,
                        )
            rec.call(
                f"loss/{name}/{n}x{c}/{case}/nograd",
                fn,
                pred_case,
                tgt,
                compute_grad=False,
                **extra,
            )


def run_optimizers(core, rec: Recorder, rng, dtype) -> None:
    name = np.dtype(dtype).name
    size = 1037

    def fresh():
        return rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)

    for threads in THREADS:
        tag = f"optim/{name}/t{threads}"
        for momentum, nesterov, wd in [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)]:
            p, g = fresh()
            vel = np.zeros(size, dtype) if momentum else None
            for step in range(1, 4):
                core.sgd_step(
                    p,
                    g * step,
                    lr=0.1,
                    momentum=momentum,
                    velocity=vel,
                    nesterov=nesterov,
                    weight_decay=wd,
                    step=step,
                    num_threads=threads,
                )
            rec.put(f"{tag}/sgd/{momentum}/{nesterov}/{wd}", (p, vel))
        for wd, decoupled, amsgrad in [
            (0.0, False, False),
            (0.01, True, False),
            (0.01, False, True),
        ]:
            p, g = fresh()
            m = np.zeros(size, dtype)
            v = np.zeros(size, dtype)
            vmax = np.zeros(size, dtype) if amsgrad else None
            for step in range(1, 4):
                core.adam_step(
                    p,
                    g / step,
                    m,
                    v,
                    step=step,
                    lr=1e-3,
                    weight_decay=wd,
                    decoupled_weight_decay=decoupled,
                    v_max=vmax,
                    num_threads=threads,
                )
            rec.put(f"{tag}/adam/{wd}/{decoupled}/{amsgrad}", (p, m, v, vmax))
        for momentum, centered in [(0.0, False), (0.9, True)]:
            p, g = fresh()
            sq = np.zeros(size, dtype)
            vel = np.zeros(size, dtype) if momentum else None
            avg = np.zeros(size, dtype) if centered else None
            for _ in range(3):
                core.rmsprop_step(
                    p,
                    g,
                    sq,
                    lr=0.01,
                    momentum=momentum,
                    velocity=vel,
                    centered=centered,
                    grad_avg=avg,
                    weight_decay=0.001,
                    num_threads=threads,
                )
            rec.put(f"{tag}/rmsprop/{momentum}/{centered}", (p, sq, vel, avg))
        grads = [rng.standard_normal(s).astype(dtype) for s in (size, 31, 0, 4099)]
        norm = core.clip_by_global_norm(grads, 1.5, num_threads=threads)
        rec.put(f"{tag}/clip", (np.array(norm), *grads))


def run_data(core, rec: Recorder, rng) -> None:
    source = rng.standard_normal((257, 13)).astype(np.float32)
    indices = rng.integers(0, 257, 1000)
    for threads in THREADS:
        rec.put(f"take_rows/t{threads}", core.take_rows(source, indices, num_threads=threads))


def dump(so_path: str, out_path: str) -> None:
    core = load(so_path)
    rec = Recorder()
    for dtype in DTYPES:
        rng = np.random.default_rng(20261204)
        run_activations(core, rec, rng, dtype)
        run_dense(core, rec, rng, dtype)
        run_chain(core, rec, rng, dtype)
        run_losses(core, rec, rng, dtype)
        run_optimizers(core, rec, rng, dtype)
    run_data(core, rec, np.random.default_rng(7))
    rec.out["gemm_isa"] = np.array(core.build_info()["gemm_isa"])
    np.savez(out_path, **rec.out)


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in units in the last place between two float arrays (NaN = equal)."""
    if a.dtype.kind != "f" or a.shape != b.shape:
        return -1
    bits = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}[a.dtype]

    def ordered(v):
        i = v.view(bits).astype(np.int64)
        return np.where(i < 0, np.iinfo(bits).min - i, i)

    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.abs(ordered(a) - ordered(b))
    diff[both_nan] = 0
    return int(diff.max()) if diff.size else 0


def compare(a_path: str, b_path: str, shared_only: bool = False) -> tuple[list[str], int]:
    """The differing outputs, and how many outputs only one build has (with shared_only
    these are skipped, e.g. the calls of an activation the other build lacks; otherwise each
    is a difference)."""
    a = np.load(a_path)
    b = np.load(b_path)
    problems = []
    unshared = 0
    for key in sorted(set(a.files) | set(b.files)):
        if key == "gemm_isa":
            continue
        if key not in a.files or key not in b.files:
            unshared += 1
            if not shared_only:
                problems.append(f"{key}: only in {'A' if key in a.files else 'B'}")
            continue
        x, y = a[key], b[key]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{key}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        elif x.dtype.kind in "US":
            if x.tobytes() != y.tobytes():
                problems.append(f"{key}: {x} vs {y}")
        elif np.ascontiguousarray(x).tobytes() != np.ascontiguousarray(y).tobytes():
            x, y = x.reshape(-1), y.reshape(-1)  # 0-d values (reduced losses) too
            count = int(np.sum(x.view(np.uint8) != y.view(np.uint8)))
            problems.append(f"{key}: {count} bytes differ, max {ulps(x, y)} ulp")
    return problems, unshared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-so", help="the reference build's _core shared object")
    parser.add_argument("--b-so", help="the build under test")
    parser.add_argument("--isa", default=",".join(ISAS), help="comma-separated DENSEKIT_ISA values")
    parser.add_argument(
        "--shared-only",
        action="store_true",
        help="compare only the outputs both builds make (one build adds kernels or names, "
        "e.g. activations, that the other lacks); the rest are counted, not failed",
    )
    parser.add_argument("--dump", nargs=2, metavar=("SO", "NPZ"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        dump(*args.dump)
        return
    if not (args.a_so and args.b_so):
        parser.error("--a-so and --b-so are required")
    failed = False
    with tempfile.TemporaryDirectory(prefix="densekit-bits-") as folder:
        for isa in args.isa.split(","):
            paths = {}
            for label, so in (("A", args.a_so), ("B", args.b_so)):
                paths[label] = os.path.join(folder, f"{isa}-{label}.npz")
                env = dict(os.environ, DENSEKIT_ISA=isa)
                command = [sys.executable, "-m", "tools.compare_bits", "--dump", so, paths[label]]
                root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                subprocess.run(command, env=env, check=True, cwd=root)
            used = {label: str(np.load(path)["gemm_isa"]) for label, path in paths.items()}
            problems, unshared = compare(paths["A"], paths["B"], args.shared_only)
            outputs = len(np.load(paths["A"]).files) - 1
            status = "identical" if not problems else f"{len(problems)} DIFFER"
            skipped = f" ({unshared} in one build only, not compared)" if args.shared_only else ""
            print(
                f"DENSEKIT_ISA={isa} (ran {used['A']} / {used['B']}): {outputs} outputs, "
                f"{status}{skipped}"
            )
            for line in problems[:40]:
                print("  ", line)
            failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
