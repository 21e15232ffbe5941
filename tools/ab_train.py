"""A/B timing of the model layer of two source trees: the per-step cost of Sequential.

Each tree's package (its python/ folder, with a built _core inside) runs in its own process,
and the processes alternate over rounds, so both see the same machine. A process times, on
the public API only: train_on_batch of 784-256-128-10 at batch 64 and of 64-32-10 at batch 32
(Adam), one fit epoch of 100 steps of 64-32-10, and batch-1 predict. Reports, per case, the
median over rounds of each tree's median time and B's speed over A's (B/A > 1: B is faster).

    python -m tools.ab_train --a-tree /path/to/old/checkout --b-tree . [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

# Runs inside each tree's process; prints {case: median seconds} as JSON.
PROBE = r"""
import json, sys, time
import numpy as np
import densekit
from densekit import layers, optimizers

def model(widths, seed):
    m = densekit.Sequential([layers.Input((widths[0],))] + [
        layers.Dense(u, activation="relu") for u in widths[1:-1]
    ] + [layers.Dense(widths[-1], activation="softmax")])
    m.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return m

def median(fn, calls):
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))

rng = np.random.default_rng(0)
out = {}
for widths, batch, calls in (((784, 256, 128, 10), 64, 60), ((64, 32, 10), 32, 400)):
    m = model(widths, 0)
    x = rng.standard_normal((batch, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], batch)
    name = f"train_on_batch {batch}x" + "-".join(map(str, widths))
    out[name] = median(lambda: m.train_on_batch(x, y), calls)
    if widths[0] == 64:
        xs = rng.standard_normal((3200, 64)).astype(np.float32)
        ys = rng.integers(0, 10, 3200)
        fit = lambda: m.fit(xs, ys, batch_size=32, epochs=1, verbose=0)
        out["fit epoch 100x32x64-32-10"] = median(fit, 8)
    else:
        one = x[:1]
        out["predict 1x784-256-128-10"] = median(lambda: m.predict(one, verbose=0), 400)
print(json.dumps(out))
"""


def run(tree: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.abspath(tree), "python"))
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-tree", required=True)
    parser.add_argument("--b-tree", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
            results[name].append(run(args.a_tree if name == "A" else args.b_tree))
    for case in results["A"][0]:
        a = float(np.median([row[case] for row in results["A"]]))
        b = float(np.median([row[case] for row in results["B"]]))
        print(f"{case:<32} A {a * 1e3:8.3f} ms  B {b * 1e3:8.3f} ms  B/A {a / b:.3f}")


if __name__ == "__main__":
    main()
