"""Private timing of the matrix-product engine against NumPy (OpenBLAS) and torch, same run.

Not a test and not the benchmark suite (bench/ is): a tool for tuning csrc/gemm. Every
contender runs in rounds, interleaved, after a warm-up; per-call times are pooled and the
median is reported, with ratios computed from those medians. Usage (see README.md):

    python -m tools.gemm_timing [forward|gemm|backward|f64|scaling] [--threads 2] [--rounds 7]

(from the repository root, so that bench/ imports as a package).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import densekit
from bench.gemm import MLP_SHAPES as MLP  # the MLP shapes: one list
from densekit import kernels as K

LARGE = [(1024, 1024, 1024), (2048, 2048, 2048), (8192, 512, 512)]


def timed(fn, calls):
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def others_cpu_seconds():
    """CPU seconds used so far by all processes but this one (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6))  # user nice system irq softirq
    own = sum(os.times()[:2])
    return busy / os.sysconf("SC_CLK_TCK") - own


def race(contenders, flops, rounds, budget=0.4, max_others=0.02):
    """Median seconds per call of each contender, interleaved in rounds. A block of calls
    during which other processes used more than max_others CPU seconds is run again (up to
    five times): this machine is shared, and a busy neighbour halves a 2-thread product."""
    for fn in contenders.values():
        fn()
    t = time.perf_counter()
    next(iter(contenders.values()))()
    once = max(time.perf_counter() - t, 1e-6)
    calls = max(3, min(400, int(budget / rounds / once)))
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            for _attempt in range(5):
                # Let the previous contender's idle workers park first: OpenBLAS's spin for
                # about 2**28 cycles (~0.1 s) after a call, OpenMP's for ~1 ms.
                time.sleep(0.15)
                contenders[name]()
                before = others_cpu_seconds()
                block = timed(contenders[name], calls)
                if others_cpu_seconds() - before <= max_others:
                    break
            samples[name] += block
    return {name: float(np.median(s)) for name, s in samples.items()}


def report(title, shape, flops, medians, base="densekit"):
    cells = [f"{name} {flops / t / 1e9:7.1f}" for name, t in medians.items()]
    ratios = [f"{medians[n] / medians[base]:5.2f}x vs {n}" for n in medians if n != base]
    line = f"{title:9s} {shape!s:>20s}  GF/s: " + "  ".join(cells)
    print(line + "   densekit " + ", ".join(ratios), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "what",
        nargs="?",
        default="forward",
        choices=["forward", "gemm", "backward", "f64", "scaling"],
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shapes", default="")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    th = args.threads
    info = densekit.build_info()
    print(
        f"densekit {info['gemm_kernel_float32']} / {info['gemm_kernel_float64']}, isa "
        f"{info['gemm_isa']}, threads {th}; torch {torch.__version__}; numpy {np.__version__}"
    )
    rng = np.random.default_rng(0)
    shapes = MLP if args.what in ("forward", "backward") else LARGE
    if args.what == "f64":
        shapes = MLP[1:5]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]

    for n, k, m in shapes:
        run_shape(args.what, n, k, m, th, args.rounds, rng)


def run_shape(what, n, k, m, th, rounds, rng):
    import torch
    import torch.nn.functional as F

    dtype = np.float64 if what == "f64" else np.float32
    x = rng.standard_normal((n, k)).astype(dtype)
    w = (rng.standard_normal((k, m)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    tx, tb = torch.from_numpy(x), torch.from_numpy(b)
    tw_t = torch.from_numpy(np.ascontiguousarray(w.T))  # F.linear's (m, k) layout
    tw = torch.from_numpy(w)
    out = np.empty((n, m), dtype)
    flops = 2.0 * n * k * m
    if what == "forward":
        with torch.no_grad():
            med = race(
                {
                    "densekit": lambda: K.dense_forward(x, w, b, "relu", out=out, num_threads=th),
                    "numpy": lambda: np.maximum(x @ w + b, 0),
                    "torch": lambda: torch.relu(F.linear(tx, tw_t, tb)),
                },
                flops,
                rounds,
            )
        report("fwd+relu", (n, k, m), flops, med)
    elif what in ("gemm", "f64"):
        with torch.no_grad():
            med = race(
                {
                    "densekit": lambda: K.dense_forward(x, w, out=out, num_threads=th),
                    "numpy": lambda: x @ w,
                    "torch": lambda: torch.mm(tx, tw),
                },
                flops,
                rounds,
            )
        report("gemm" if dtype == np.float32 else "gemm f64", (n, k, m), flops, med)
    elif what == "scaling":
        med = race(
            {
                "densekit": lambda: K.dense_forward(x, w, out=out, num_threads=2),
                "1 thread": lambda: K.dense_forward(x, w, out=out, num_threads=1),
            },
            flops,
            rounds,
        )
        print(
            f"scaling {(n, k, m)}: 1->2 threads {med['1 thread'] / med['densekit']:.2f}x "
            f"({flops / med['densekit'] / 1e9:.1f} GF/s on 2)"
        )
    elif what == "backward":
        z = np.empty((n, m), dtype)
        y = K.dense_forward(x, w, b, "relu", preact_out=z)
        dy = rng.standard_normal((n, m)).astype(dtype)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        tx_g = tx.clone().requires_grad_(True)
        tw_g = tw_t.clone().requires_grad_(True)
        tb_g = tb.clone().requires_grad_(True)
        tdy = torch.from_numpy(dy)

        def torch_step():
            tx_g.grad = tw_g.grad = tb_g.grad = None
            torch.relu(F.linear(tx_g, tw_g, tb_g)).backward(tdy)

        def densekit_step():
            K.dense_forward(x, w, b, "relu", out=y, num_threads=th)
            K.dense_backward(
                dy, x, w, y=y, activation="relu", dx_out=dx, dw_out=dw, db_out=db, num_threads=th
            )

        def numpy_step():
            zz = x @ w + b
            yy = np.maximum(zz, 0)
            dz = dy * (yy > 0)
            return dz @ w.T, x.T @ dz, dz.sum(0)

        med = race(
            {"densekit": densekit_step, "numpy": numpy_step, "torch": torch_step}, 3 * flops, rounds
        )
        report("fwd+bwd", (n, k, m), 3 * flops, med)


if __name__ == "__main__":
    main()
