"""A/B timing of two builds of densekit._core, or of two DENSEKIT_GEMM_TUNE settings, in one
process, interleaved: on this shared machine two runs in separate processes differ by 3-10%,
two contenders in one process by about 1%. Not a test and not the benchmark suite.

    python -m tools.gemm_ab --b-so build/other/_core...so [--a-so ...] --shapes 8192x512x512
    python -m tools.gemm_ab --b-tune kc=384 --shapes 1024x1024x1024,256x784x256 --threads 1

Each contender is a copy of a _core shared object loaded under its own path and its own module
name (so each has its own globals, thread pool and tuning, read from DENSEKIT_GEMM_TUNE at its
import, or at its first product in older builds). The names must differ: CPython keeps one
extension module per name, and a second load under "densekit._core" returns the first module
(the two contenders would be one build).
Reports the medians of dense_forward calls per shape and B's speed over A's.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import tempfile
import time

import numpy as np

import densekit


def load(path: str, tune: str, label: str):
    """A fresh copy of the extension at `path`, its tuning fixed to `tune`."""
    folder = tempfile.mkdtemp(prefix="densekit-ab-")
    copy = os.path.join(folder, os.path.basename(path))
    shutil.copy(path, copy)
    name = f"densekit_ab_{label}._core"  # its own name: see the module docstring
    loader = importlib.machinery.ExtensionFileLoader(name, copy)
    spec = importlib.util.spec_from_file_location(name, copy, loader=loader)
    os.environ["DENSEKIT_GEMM_TUNE"] = tune
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    eye = np.eye(16, dtype=np.float32)
    module.dense_forward(eye, eye, None, "linear", num_threads=1)  # older builds read it here
    os.environ.pop("DENSEKIT_GEMM_TUNE", None)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    installed = densekit._core.__file__
    parser.add_argument("--a-so", default=installed)
    parser.add_argument("--b-so", default=installed)
    parser.add_argument("--a-tune", default="")
    parser.add_argument("--b-tune", default="")
    parser.add_argument("--shapes", default="1024x1024x1024,8192x512x512,256x784x256")
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    contenders = {
        "A": load(args.a_so, args.a_tune, "a"),
        "B": load(args.b_so, args.b_tune, "b"),
    }
    assert contenders["A"] is not contenders["B"]
    assert contenders["A"].__file__ != contenders["B"].__file__
    rng = np.random.default_rng(0)
    for shape in args.shapes.split(","):
        n, k, m = (int(v) for v in shape.split("x"))
        x = rng.standard_normal((n, k)).astype(args.dtype)
        w = (rng.standard_normal((k, m)) / np.sqrt(k)).astype(args.dtype)
        b = np.zeros(m, args.dtype)
        out = np.empty((n, m), args.dtype)
        flops = 2 * n * k * m
        calls = max(3, int(1.5e9 / flops))
        times = {name: [] for name in contenders}
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                forward = contenders[name].dense_forward
                forward(x, w, b, args.activation, out=out, num_threads=args.threads)
                for _ in range(calls):
                    start = time.perf_counter()
                    forward(x, w, b, args.activation, out=out, num_threads=args.threads)
                    times[name].append(time.perf_counter() - start)
        a, b_ = (float(np.median(times[name])) for name in ("A", "B"))
        print(
            f"{shape:>16} {args.dtype} {args.activation} threads {args.threads}: "
            f"A {flops / a / 1e9:6.1f}  B {flops / b_ / 1e9:6.1f} GFLOP/s  B/A {a / b_:.3f}"
        )


if __name__ == "__main__":
    main()
