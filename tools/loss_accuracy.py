"""Accuracy of the exp- and log-based loss kernels of one or two builds of densekit._core.

Sweeps logits over the whole range where exp matters (random values, plus every float32 and
a dense float64 grid near the smallest normal exp, -87.34 and -708.40), and reports the largest
error, in units in the last place of the kernel's dtype, of the per-sample losses and the
gradients of sigmoid_binary_cross_entropy and softmax_cross_entropy against a long-double
reference computed from the same inputs; and, for builds that have the hook
_loss_log_isa_test, of the losses' own log and log1p (vecmath's vector_log) over positive
numbers of every magnitude, subnormals included.

    python -m tools.loss_accuracy --so old/_core.so --so new/_core.so
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import tempfile

import numpy as np

LD = np.longdouble


def load(path: str, package: str):
    """The extension at `path`, loaded from a copy as `package`._core (one per build)."""
    folder = tempfile.mkdtemp(prefix="densekit-accuracy-")
    copy = os.path.join(folder, os.path.basename(path))
    shutil.copy(path, copy)
    name = f"{package}._core"
    loader = importlib.machinery.ExtensionFileLoader(name, copy)
    spec = importlib.util.spec_from_file_location(name, copy, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def ulp_error(value: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """(max and mean of |value - reference| / ulp(reference) where the reference is a normal
    number of value's dtype, max |value - reference| where it is below the normal range)."""
    tiny = LD(np.finfo(value.dtype).tiny)
    ref = reference.astype(value.dtype)
    error = np.abs(value.astype(LD) - reference)
    error[np.isnan(value) & np.isnan(reference)] = 0
    normal = np.abs(reference) >= tiny
    ulps = error[normal] / np.spacing(np.abs(ref[normal])).astype(LD)
    below = error[~normal]
    if not ulps.size:
        return 0.0, 0.0, float(below.max()) if below.size else 0.0
    return float(ulps.max()), float(ulps.mean()), float(below.max()) if below.size else 0.0


def sweep_logits(dtype, rng) -> np.ndarray:
    low = -750.0 if dtype == np.float64 else -104.0
    edge = -708.40 if dtype == np.float64 else -87.34
    random = rng.uniform(low, 40.0, 2_000_000)
    if dtype == np.float32:
        # Every float32 in [-88, -86].
        start = np.array(-88.0, np.float32).view(np.int32)
        stop = np.array(-86.0, np.float32).view(np.int32)
        near = np.arange(stop, start + 1, dtype=np.int32).view(np.float32)
    else:
        near = np.linspace(edge - 0.6, edge + 1.5, 2_000_000)
    return np.concatenate([random.astype(dtype), near.astype(dtype)])


def sigmoid_reference(z: np.ndarray, t: float):
    zl = z.astype(LD)
    e = np.exp(-np.abs(zl))
    loss = np.maximum(zl, 0) - zl * LD(t) + np.log1p(e)
    sigmoid = np.where(zl >= 0, 1 / (1 + e), e / (1 + e))
    return loss, sigmoid - LD(t)


def softmax_reference(z: np.ndarray, labels: np.ndarray):
    zl = z.astype(LD)
    m = zl.max(axis=1, keepdims=True)
    e = np.exp(zl - m)
    s = e.sum(axis=1, keepdims=True)
    lse = (m + np.log(s))[:, 0]
    rows = np.arange(len(labels))
    loss = lse - zl[rows, labels]
    grad = e / s
    grad[rows, labels] -= 1
    return loss, grad


def sweep_positive(dtype, rng) -> np.ndarray:
    """Every float32 in [1, 2) and 4M log-uniform samples over the positive floats (float64:
    4M log-uniform and 1M in [0.5, 2))."""
    if dtype == np.float32:
        one, two = np.array([1.0, 2.0], np.float32).view(np.int32)
        spread = np.exp(rng.uniform(-103.0, 88.7, 4_000_000)).astype(np.float32)
        return np.concatenate([np.arange(one, two, dtype=np.int32).view(np.float32), spread])
    return np.concatenate(
        [np.exp(rng.uniform(-744.0, 709.7, 4_000_000)), rng.uniform(0.5, 2, 1 << 20)]
    )


def measure(core, dtype, rng) -> dict[str, float]:
    errors = {}
    if hasattr(core, "_loss_log_isa_test"):
        x = sweep_positive(dtype, np.random.default_rng(6))  # the logits sweep keeps rng
        isa = core.build_info()["gemm_isa"]
        for log1p, reference in ((False, np.log), (True, np.log1p)):
            got = core._loss_log_isa_test(isa, x, log1p=log1p)
            errors[f"{'log1p' if log1p else 'log'} ({isa})"] = ulp_error(
                got, reference(x.astype(LD))
            )
    z = sweep_logits(dtype, rng)
    for t in (0.0, 1.0, 0.25):
        target = np.full_like(z, t)
        loss, grad = core.sigmoid_binary_cross_entropy(z, target, reduction="none")
        ref_loss, ref_grad = sigmoid_reference(z, t)
        errors[f"sigmoid_bce t={t} loss"] = ulp_error(loss, ref_loss)
        errors[f"sigmoid_bce t={t} grad"] = ulp_error(grad, ref_grad)
    # Rows (0, x, y): their softmax holds exp(x), exp(y) relative to about 1.
    n = z.size // 2
    logits = np.stack([np.zeros(n, dtype), z[:n], z[n : 2 * n]], axis=1)
    logits = np.ascontiguousarray(logits[np.max(logits, axis=1) <= 0])
    for label in (0, 1):
        labels = np.full(len(logits), label, np.int64)
        loss, grad = core.softmax_cross_entropy(logits, labels, reduction="none")
        ref_loss, ref_grad = softmax_reference(logits, labels)
        errors[f"softmax_ce label={label} loss"] = ulp_error(loss, ref_loss)
        errors[f"softmax_ce label={label} grad"] = ulp_error(grad, ref_grad)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--so", action="append", required=True, help="a build's _core (repeat)")
    args = parser.parse_args()
    results = []
    for index, path in enumerate(args.so):
        core = load(path, f"densekit_accuracy_{index}")
        results.append(
            {
                dtype.__name__: measure(core, dtype, np.random.default_rng(5))
                for dtype in (np.float32, np.float64)
            }
        )
    print("max error in ulp of the kernel's dtype; columns: " + " | ".join(args.so))
    for dtype in ("float32", "float64"):
        for key in dict.fromkeys(k for r in results for k in r[dtype]):
            cells = " | ".join(
                f"max {r[dtype][key][0]:9.3f} mean {r[dtype][key][1]:.4f} ulp, "
                f"{r[dtype][key][2]:.2e} below normal"
                if key in r[dtype]
                else "(no hook)"
                for r in results
            )
            print(f"{dtype:8s} {key:32s} {cells}")


if __name__ == "__main__":
    main()
