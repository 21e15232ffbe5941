"""Asynchronous training and inference, measured: ``python -m bench.async_bench [--quick]``.

1. Inference from 1, 2 and 4 Python threads at once (batch 256, 1024-1024-1024 MLP):
   aggregate throughput with the thread budget against the naive behaviour (every call asks
   for all the cores), and the rate a pure-Python thread keeps beside the kernels.
2. Living beside other thread pools: densekit and NumPy (and torch) products alternated in one
   thread against the sum of their separate times: on densekit's own pool (default, and
   without spinning) and on OpenMP regions (DENSEKIT_THREADING=openmp, with densekit's short
   libgomp spin and libgomp's default); and what each costs back-to-back kernels (a training
   step).
3. The prefetching input pipeline: epoch time with a per-batch preprocessing cost close to the
   step time, without and with prefetch, against max(compute, preprocessing).
4. Hyperparameter search: four models trained one after another and at once from a pool.
5. Hogwild on the digits: throughput and test accuracy against synchronous training.
Medians of repeated runs; ratios are taken within one run. Section 2 runs each setting in a
fresh process (both read their settings once, when they load).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")  # as bench/__init__.py

import densekit
from densekit import data, kernels, layers, losses, optimizers
from densekit.demo import EpochTimer, load_digits_split

CORES = densekit.get_num_threads()


def median_time(function, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- 1. concurrent inference -----------------------------------------------------------------
def inference_model():
    densekit.set_random_seed(0)
    model = densekit.Sequential(
        [layers.Input((1024,)), layers.Dense(1024, "relu"), layers.Dense(1024)]
    )
    return model


def aggregate_throughput(model, x, callers: int, seconds: float, naive: bool) -> float:
    """Samples per second of ``callers`` threads each predicting batches of x in a loop."""
    counts = [0] * callers
    start_barrier = threading.Barrier(callers + 1)
    stop = threading.Event()

    def work(index):
        start_barrier.wait()
        while not stop.is_set():
            model.predict(x, batch_size=x.shape[0])
            counts[index] += x.shape[0]

    context = densekit.num_threads(CORES) if naive else _nothing()
    with context:
        pool = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
        for thread in pool:
            thread.start()
        start_barrier.wait()
        begin = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - begin
    return sum(counts) / elapsed


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def python_rate(seconds: float, action=None) -> float:
    """Iterations per second of a pure-Python counting loop, alone or beside ``action``."""
    counter = [0]
    stop = threading.Event()

    def count():
        n = 0
        while not stop.is_set():
            n += 1
            counter[0] = n

    busy = None
    if action is not None:

        def repeat():
            while not stop.is_set():
                action()

        busy = threading.Thread(target=repeat)
        busy.start()
        time.sleep(0.1)
    worker = threading.Thread(target=count)
    worker.start()
    time.sleep(seconds)
    stop.set()
    worker.join()
    if busy is not None:
        busy.join()
    return counter[0] / seconds


def concurrency(quick: bool) -> dict:
    model = inference_model()
    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    seconds = 1.0 if quick else 2.0
    rounds = 1 if quick else 3
    results = {"budget": {}, "naive": {}}
    for _ in range(rounds):
        for mode in ("budget", "naive"):
            for callers in (1, 2, 4):
                rate = aggregate_throughput(model, x, callers, seconds, mode == "naive")
                results[mode].setdefault(callers, []).append(rate)
    table = {
        mode: {c: statistics.median(rates) for c, rates in by_callers.items()}
        for mode, by_callers in results.items()
    }
    base = table["budget"][1]
    solo = python_rate(seconds)
    beside = python_rate(seconds, lambda: model.predict(x, batch_size=256))
    return {
        "samples_per_s": table,
        "vs_one_thread": {
            mode: {c: rate / base for c, rate in rates.items()} for mode, rates in table.items()
        },
        "python_thread_kept": beside / solo,
    }


# -- 2. beside other thread pools --------------------------------------------------------------
_PEERS_CODE = r"""
import json, os, statistics, time
import numpy as np
import densekit
from densekit import kernels, layers, losses
rng = np.random.default_rng(0)
a = rng.standard_normal((256, 256)).astype(np.float32)
b = rng.standard_normal((256, 256)).astype(np.float32)
out, out2 = np.empty_like(a), np.empty_like(a)
def med(fn, n=REPEATS):
    for _ in range(10): fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)
dk = lambda: kernels.dense_forward(a, b, out=out)
nump = lambda: np.matmul(a, b, out=out2)
result = {"densekit": med(dk), "numpy": med(nump)}
result["densekit+numpy"] = med(lambda: (dk(), nump()))
try:
    import torch
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tout = torch.empty(256, 256)
    tor = lambda: torch.matmul(ta, tb, out=tout)
    result["torch"] = med(tor)
    result["densekit+torch"] = med(lambda: (dk(), tor()))
    result["numpy+torch"] = med(lambda: (nump(), tor()))
except ImportError:
    pass
x = rng.standard_normal((32, 64)).astype(np.float32); y = rng.integers(0, 10, 32)
m = densekit.Sequential([layers.Input((64,)), layers.Dense(256, "relu"),
                         layers.Dense(128, "relu"), layers.Dense(10)])
m.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True))
state = m.training_state
plan = state.load_batch(*state.dataset(x, y))
result["train_step_batch32"] = med(lambda: state.train_step(plan))
xb = rng.standard_normal((256, 64)).astype(np.float32); yb = rng.integers(0, 10, 256)
plan256 = state.load_batch(*state.dataset(xb, yb))
result["train_step_batch256"] = med(lambda: state.train_step(plan256))
print(json.dumps(result))
"""


def peers(quick: bool) -> dict:
    settings = {
        f"densekit's pool (spin {densekit._core.build_info()['spin_us']} us)": {},
        "pool, no spin (DENSEKIT_SPIN_US=0)": {"DENSEKIT_SPIN_US": "0"},
        f"OpenMP regions (GOMP_SPINCOUNT={densekit._openmp_env.SPIN_COUNT})": {
            "DENSEKIT_THREADING": "openmp"
        },
        "OpenMP, libgomp default (300000)": {
            "DENSEKIT_THREADING": "openmp",
            "GOMP_SPINCOUNT": "300000",
        },
    }
    repeats = 100 if quick else 300
    rounds = 1 if quick else 3
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, env in settings.items():
            full_env = {
                k: v
                for k, v in os.environ.items()
                if k
                not in (
                    "GOMP_SPINCOUNT",
                    "OMP_WAIT_POLICY",
                    "DENSEKIT_THREADING",
                    "DENSEKIT_SPIN_US",
                )
            }
            full_env.update(env)
            code = _PEERS_CODE.replace("REPEATS", str(repeats))
            output = subprocess.run(
                [sys.executable, "-c", code],
                env=full_env,
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            ).stdout
            runs[name].append(json.loads(output))
    table = {}
    for name, results in runs.items():
        merged = {key: statistics.median(r[key] for r in results) for key in results[0]}
        row = {key: value * 1e6 for key, value in merged.items()}
        row["densekit+numpy / sum"] = merged["densekit+numpy"] / (
            merged["densekit"] + merged["numpy"]
        )
        if "torch" in merged:
            row["densekit+torch / sum"] = merged["densekit+torch"] / (
                merged["densekit"] + merged["torch"]
            )
            row["numpy+torch / sum"] = merged["numpy+torch"] / (merged["numpy"] + merged["torch"])
        table[name] = row
    return table


# -- 3. the prefetching pipeline ---------------------------------------------------------------
def pipeline_model():
    densekit.set_random_seed(0)
    model = densekit.Sequential(
        [
            layers.Input((512,)),
            layers.Dense(512, "relu"),
            layers.Dense(512, "relu"),
            layers.Dense(10),
        ]
    )
    model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def pipeline(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    batch, batches = 128, 20 if quick else 40
    x = rng.standard_normal((batch * batches, 512)).astype(np.float32)
    y = rng.integers(0, 10, batch * batches)
    model = pipeline_model()
    base = data.Dataset.from_tensor_slices((x, y)).shuffle(seed=0).batch(batch)
    model.fit(base, epochs=1, verbose=0)  # warm up, buffers

    def epoch_time(dataset) -> float:
        return median_time(lambda: model.fit(dataset, epochs=1, verbose=0), 3, warmup=1)

    compute = epoch_time(base)
    step = compute / batches
    noise = np.empty((batch, 512), np.float32)
    generator = np.random.default_rng(1)

    def io_like(bx, by):  # waiting on a file or a socket: the GIL is free
        time.sleep(step)
        return bx, by

    def numpy_work(bx, by):  # CPU work in NumPy calls (they release the GIL in their loops)
        deadline = time.perf_counter() + step
        while time.perf_counter() < deadline:
            generator.standard_normal(dtype=np.float32, out=noise)
            np.add(bx, noise, out=bx)
        return bx, by

    results = {"compute_epoch_s": compute, "steps": batches}
    for name, function in (("io_like", io_like), ("numpy_cpu", numpy_work)):
        mapped = base.map(function)
        preprocessing = median_time(lambda m=mapped: sum(1 for _ in m.iterate(0)), 3, warmup=1)
        serial = epoch_time(mapped)
        overlapped = epoch_time(mapped.prefetch(2))
        results[name] = {
            "preprocessing_s": preprocessing,
            "no_prefetch_s": serial,
            "prefetch_s": overlapped,
            "max_s": max(compute, preprocessing),
            "sum_s": compute + preprocessing,
            "prefetch_over_max": overlapped / max(compute, preprocessing),
        }
    return results


# -- 4. hyperparameter search ------------------------------------------------------------------
def digits_model(rate: float) -> densekit.Sequential:
    """The demo's MLP (64-256-128-10, logits), Adam at ``rate``, with accuracy."""
    model = densekit.Sequential(
        [
            layers.Input((64,)),
            layers.Dense(256, "relu"),
            layers.Dense(128, "relu"),
            layers.Dense(10),
        ]
    )
    model.compile(
        optimizers.Adam(rate),
        losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def search(quick: bool) -> dict:

    x_train, y_train, x_test, y_test = load_digits_split(0)
    rates = [0.0003, 0.001, 0.003, 0.01]
    epochs = 3 if quick else 10

    def build(rate):
        densekit.set_random_seed(0)  # process-wide: models are built one at a time
        return digits_model(rate)

    def train(model):
        model.fit(x_train, y_train, batch_size=32, epochs=epochs, seed=0, verbose=0)
        return model.evaluate(x_test, y_test, verbose=0)[1]

    train(build(0.001))  # warm up
    sequential_times, pool_times = [], []
    for _ in range(1 if quick else 3):  # alternated, medians: the machine may be shared
        models = [build(rate) for rate in rates]
        start = time.perf_counter()
        one_by_one = [train(model) for model in models]
        sequential_times.append(time.perf_counter() - start)
        models = [build(rate) for rate in rates]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(rates)) as pool:
            at_once = list(pool.map(train, models))
        pool_times.append(time.perf_counter() - start)
    sequential = statistics.median(sequential_times)
    concurrent_time = statistics.median(pool_times)
    return {
        "models": len(rates),
        "sequential_s": sequential,
        "thread_pool_s": concurrent_time,
        "speedup": sequential / concurrent_time,
        "accuracies_equal": one_by_one == at_once,
    }


# -- 5. hogwild ------------------------------------------------------------------------------
def hogwild(quick: bool) -> dict:

    x_train, y_train, x_test, y_test = load_digits_split(0)
    epochs = 5 if quick else 15
    results = {}
    for batch_size in (8, 32):
        for workers in (1, 2, 4):
            densekit.set_random_seed(0)
            model = digits_model(0.001)
            timer = EpochTimer()
            model.fit(
                x_train,
                y_train,
                batch_size=batch_size,
                epochs=epochs,
                seed=0,
                verbose=0,
                workers=workers,
                strategy="hogwild",
                callbacks=[timer],
            )
            epoch_s = statistics.median(timer.seconds)
            results[f"batch {batch_size}, workers {workers}"] = {
                "samples_per_s": len(x_train) / epoch_s,
                "test_accuracy": model.evaluate(x_test, y_test, verbose=0)[1],
            }
    return results


SECTIONS = {
    "concurrency": concurrency,
    "peers": peers,
    "pipeline": pipeline,
    "search": search,
    "hogwild": hogwild,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.async_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    info = kernels.build_info()
    print(
        f"densekit {densekit.__version__}, {CORES} threads, gemm {info['gemm_kernel_float32']}, "
        f"regions: {info['threading']} (spin {info['spin_us']} us), "
        f"OpenMP wait: {densekit._openmp_env.status}"
    )
    results = {}
    for name in args.only or SECTIONS:
        start = time.perf_counter()
        results[name] = SECTIONS[name](args.quick)
        print(f"\n== {name} ({time.perf_counter() - start:.0f} s)")
        print(json.dumps(results[name], indent=2, default=float))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
