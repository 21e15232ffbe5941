"""Smoke test of an installed densekit: import, build facts, one kernel against NumPy, a tiny fit.

Run it with the interpreter of the environment under test, from outside the source tree
(tools/wheel.sh and cibuildwheel's test-command do), so that ``import densekit`` finds the
installed wheel: the script refuses a densekit imported from a source checkout. It prints one
line and exits 0, or raises.

    python tools/smoke_test.py
"""

from __future__ import annotations

import os
import sys
import sysconfig


def main() -> None:
    import numpy as np

    import densekit
    from densekit import kernels, layers

    location = os.path.realpath(os.path.dirname(densekit.__file__))
    installed = [os.path.realpath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")]
    if not any(location.startswith(root + os.sep) for root in installed):
        raise SystemExit(f"densekit was imported from {location}, not from {installed}")
    info = densekit.build_info()
    if info["version"] != densekit.__version__:
        raise SystemExit(f"version mismatch: {info['version']} != {densekit.__version__}")
    typed = os.path.join(location, "py.typed")
    stubs = os.path.join(location, "_core.pyi")
    if not (os.path.isfile(typed) and os.path.isfile(stubs)):
        raise SystemExit("py.typed or _core.pyi is missing from the installed package")

    # One fused kernel against a float64 NumPy reference.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 19)).astype(np.float32)
    w = rng.standard_normal((19, 11)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    y = kernels.dense_forward(x, w, b, "relu", num_threads=2)
    ref = np.maximum(x.astype(np.float64) @ w.astype(np.float64) + b, 0.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)

    # A tiny fit: a linearly separable problem must be learnt.
    densekit.set_random_seed(0)
    features = rng.standard_normal((256, 8)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.int64)
    model = densekit.Sequential(
        [
            layers.Input((8,)),
            layers.Dense(16, activation="relu"),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(features, labels, batch_size=32, epochs=20, verbose=0)
    losses = history.history["loss"]
    accuracy = history.history["accuracy"][-1]
    if not (losses[-1] < losses[0] and accuracy >= 0.9):
        raise SystemExit(f"the tiny fit did not learn: loss {losses}, accuracy {accuracy}")

    print(
        f"smoke test passed: densekit {densekit.__version__} on Python "
        f"{sys.version.split()[0]}, NumPy {np.__version__}, openmp={info['openmp']}, "
        f"isa={info['gemm_isa']}, tiny fit loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
        f"accuracy {accuracy:.2f}"
    )


if __name__ == "__main__":
    main()
