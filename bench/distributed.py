"""Data-parallel training over MPI: densekit's MPIStrategy against PyTorch DDP (gloo), and a
cost model toward many processes. Run alone: ``python -m bench.distributed [--quick]``.

The launcher starts workers with ``mpiexec -n P python -m mpi4py -m bench.distributed
--worker ...`` (OMP_NUM_THREADS=1: P processes x 1 thread) and prints, from their reports:
- samples/s of 1 process (a plain fit; a 1-process strategy in deterministic mode) against
  2, for the digits MLP (64-256-128-10) and 784-256-128-10 at
  global batch 256 and 1024, default and deterministic mode; the step time the training thread
  spends in the loss exchange and waiting for gradients after the backward pass;
- PyTorch DDP (gloo) on the same model, data and batch, 2 processes x 1 thread;
- densekit's bucketed allreduce of the whole gradient against one MPI_Allreduce of it;
- alpha and beta of MPI_Allreduce here (t = alpha + bytes * beta, least squares), and a cost
  model of a step that predicts samples/s at 8, 64 and 512 processes over shared memory, 25 GbE
  and 100 Gb/s InfiniBand, checked against the 2-process measurement;
- the issue's targets, met or missed, and the ceiling of 2 processes here: two independent
  single-process trainings run at once.
The figures go to stdout and ``bench/results/distributed-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = {"digits": (64, 256, 128, 10), "mlp784": (784, 256, 128, 10)}
BATCHES = (256, 1024)
DEFAULT_OUT = Path(__file__).parent / "results"
# Links for the cost model: (name, alpha in seconds, beta in seconds per byte). The shared
# memory line uses the alpha and beta measured here.
NETWORKS = {"25 GbE": (25e-6, 8 / 25e9), "100 Gb/s InfiniBand": (2e-6, 8 / 100e9)}
SCALES = (8, 64, 512)
TARGETS = {"scaling": 1.8, "versus_ddp": 1.5, "deterministic_cost": 0.15, "bucketed": 1.2}


# -- workers (under mpiexec) -----------------------------------------------------------------
def _data(widths, rows: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], size=rows)
    return x, y


def _densekit_model(widths):
    import densekit
    from densekit import layers

    densekit.set_random_seed(0)
    stack = [layers.Input((widths[0],))]
    stack += [layers.Dense(w, "relu") for w in widths[1:-1]]
    stack.append(layers.Dense(widths[-1]))
    model = densekit.Sequential(stack)
    model.compile("adam", densekit.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _median_rate(run, rows: int, repeats: int) -> tuple[float, list[float]]:
    run()  # warm: plans, workspaces, first touches
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return rows / statistics.median(seconds), seconds


def _densekit_worker(args) -> dict:
    from mpi4py import MPI

    from densekit import distributed

    comm = MPI.COMM_WORLD
    results = []
    for model_name, widths in MODELS.items():
        for batch in BATCHES:
            rows = batch * args.steps
            x, y = _data(widths, rows)
            for deterministic in (False, True):
                strategy = distributed.MPIStrategy(deterministic=deterministic)
                model = _densekit_model(widths)
                # one process in default mode: the baseline is a plain fit, no strategy
                plain = comm.Get_size() == 1 and not deterministic

                def run(model=model, strategy=None if plain else strategy, x=x, y=y, b=batch):
                    model.fit(x, y, batch_size=b, epochs=1, verbose=0, strategy=strategy)

                rate, seconds = _median_rate(run, rows, args.repeats)
                timings = strategy.timings
                steps = max(timings["steps"], 1)
                results.append(
                    {
                        "model": model_name,
                        "batch": batch,
                        "deterministic": deterministic,
                        "samples_per_s": rate,
                        "seconds": seconds,
                        "step_ms": 1e3 * timings["step_s"] / steps,
                        "exchange_ms": 1e3 * timings["exchange_s"] / steps,
                        "wait_ms": 1e3 * timings["wait_s"] / steps,
                    }
                )
    report = {"library": "densekit", "processes": comm.Get_size(), "cases": results}
    if comm.Get_size() > 1:
        report["allreduce"] = _allreduce_costs(comm, args.quick)
        report["bucketed"] = _bucketed_against_one(comm, args.repeats * 20)
    return report


def _allreduce_costs(comm, quick: bool) -> dict:
    """Median MPI_Allreduce time per message size, and alpha, beta by least squares."""
    from mpi4py import MPI

    sizes = [2**k for k in range(3, 24, 2 if quick else 1)]
    times = []
    for size in sizes:
        buffer = np.zeros(size // 4, np.float32)
        repeats = max(10, min(400, int(2e7 / size)))
        samples = []
        for _ in range(repeats):
            comm.Barrier()
            started = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            samples.append(time.perf_counter() - started)
        times.append(statistics.median(samples))
    beta, alpha = np.polyfit(np.array(sizes, float), np.array(times), 1)
    return {"bytes": sizes, "seconds": times, "alpha_s": float(alpha), "beta_s_per_byte": beta}


def _bucketed_against_one(comm, repeats: int) -> dict:
    """densekit's buckets of the 784-256-128-10 gradient (communication thread, as in
    training, without the backward pass) against one MPI_Allreduce of the whole buffer."""
    from mpi4py import MPI

    from densekit import _data_parallel, distributed

    strategy = distributed.MPIStrategy()
    model = _densekit_model(MODELS["mlp784"])
    state = model.training_state
    engine = _data_parallel.StepEngine(strategy, state, _data_parallel.Tally(strategy, state), 1)
    gradients = state.gradients
    buckets = list(engine.buckets.values())
    whole = gradients.copy()

    def bucketed():
        for low, high in buckets:
            engine.comm.submit(lambda low=low, high=high: engine.allreduce_range(low, high, 1.0))
        engine.comm.wait()

    def bucketed_inline():
        for low, high in buckets:
            engine.allreduce_range(low, high, 1.0)

    def one():
        comm.Allreduce(MPI.IN_PLACE, whole, op=MPI.SUM)

    result = {"bytes": int(gradients.nbytes), "buckets": len(buckets)}
    cases = (("bucketed", bucketed), ("bucketed_inline", bucketed_inline), ("one", one))
    for name, run in cases:
        samples = []
        for _ in range(repeats):
            gradients.fill(0)  # sums of zeros stay finite
            whole.fill(0)
            comm.Barrier()
            started = time.perf_counter()
            run()
            samples.append(time.perf_counter() - started)
        result[f"{name}_s"] = statistics.median(samples)
    engine.close()
    return result


def _torch_worker(args) -> dict:
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    port = None
    if rank == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(comm.bcast(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    results = []
    try:
        for model_name, widths in MODELS.items():
            for batch in BATCHES:
                rows = batch * args.steps
                x, y = _data(widths, rows)
                x, y = torch.from_numpy(x), torch.from_numpy(y)
                torch.manual_seed(0)
                stack = []
                for width_in, width_out in zip(widths[:-2], widths[1:-1]):
                    stack += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
                stack.append(torch.nn.Linear(widths[-2], widths[-1]))
                model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*stack))
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                loss_function = torch.nn.CrossEntropyLoss()
                local = batch // size

                def run(
                    model=model,
                    optimizer=optimizer,
                    x=x,
                    y=y,
                    batch=batch,
                    local=local,
                    loss_function=loss_function,
                ):
                    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
                    for start in range(0, x.shape[0], batch):
                        rows = order[start + rank * local : start + (rank + 1) * local]
                        loss = loss_function(model(x[rows]), y[rows])
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        loss.item()  # the logged loss, as fit reports one per step

                rate, seconds = _median_rate(run, rows, args.repeats)
                results.append(
                    {
                        "model": model_name,
                        "batch": batch,
                        "samples_per_s": rate,
                        "seconds": seconds,
                    }
                )
    finally:
        dist.destroy_process_group()
    return {"library": "torch DDP (gloo)", "processes": size, "cases": results}


def _independent_worker(args) -> dict:
    """Each rank trains its own model alone (a plain fit, no communication) at the same
    time: the samples/s two processes can reach together on this machine at best."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    widths, batch = MODELS["mlp784"], 1024
    rows = batch * args.steps
    x, y = _data(widths, rows)
    model = _densekit_model(widths)
    comm.Barrier()
    rate, _ = _median_rate(
        lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0), rows, args.repeats
    )
    return {"library": "densekit, independent", "rates": comm.allgather(rate)}


def worker(args) -> None:
    workers = {
        "densekit": _densekit_worker,
        "torch": _torch_worker,
        "independent": _independent_worker,
    }
    report = workers[args.worker](args)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        print("REPORT " + json.dumps(report), flush=True)


# -- the launcher ---------------------------------------------------------------------------
def _launch(processes: int, library: str, args) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [
        str(mpiexec) if mpiexec.exists() else "mpiexec",
        "-n",
        str(processes),
        sys.executable,
        "-m",
        "mpi4py",
        "-m",
        "bench.distributed",
        "--worker",
        library,
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        *(["--quick"] if args.quick else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    for line in result.stdout.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT ") :])
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def _flops_per_sample(widths) -> float:
    """Forward and backward multiply-adds of an MLP, as FLOPs (2 per multiply-add; backward
    twice the forward)."""
    return 6.0 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def _allreduce_time(processes: int, size_bytes: float, alpha: float, beta: float) -> float:
    """Ring/Rabenseifner allreduce: 2 log2(P) latencies and 2 (P-1)/P of the bytes each way."""
    if processes == 1:
        return 0.0
    return 2 * math.log2(processes) * alpha + 2 * (processes - 1) / processes * size_bytes * beta


def predict_step(widths, batch: int, processes: int, per_sample_s: float, alpha, beta):
    """Seconds of one step of ``batch`` global rows on ``processes`` ranks: local compute
    (measured per sample on one process, assumed flat in the slice size), the exchange of the
    loss (one small allreduce), and the gradient buckets: all but the first layer's go out
    while the first layer's backward runs (its share of the compute by FLOPs, x2/3 for
    backward); the first layer's bucket is never hidden."""
    compute = per_sample_s * batch / processes
    layer_flops = [a * b for a, b in zip(widths[:-1], widths[1:])]
    first_backward = compute * (2 / 3) * layer_flops[0] / sum(layer_flops)
    sizes = [4 * (a * b + b) for a, b in zip(widths[:-1], widths[1:])]
    first = _allreduce_time(processes, sizes[0], alpha, beta)
    rest = _allreduce_time(processes, sum(sizes[1:]), alpha, beta)
    loss = _allreduce_time(processes, 64, alpha, beta)
    return compute + loss + first + max(0.0, rest - first_backward)


def _case(report: dict, model: str, batch: int, deterministic: bool = False) -> dict:
    for case in report["cases"]:
        if (
            case["model"] == model
            and case["batch"] == batch
            and case.get("deterministic", False) == deterministic
        ):
            return case
    raise KeyError((model, batch, deterministic))


def _verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    miss = (target - value) / target if higher_is_better else (value - target) / target
    return f"MISSED by {100 * miss:.0f}%"


def summarize(one: dict, two: dict, ddp: dict) -> tuple[list[str], dict]:
    lines, verdicts = [], {}
    lines.append("samples/s, OMP_NUM_THREADS=1 (P processes x 1 thread), median of the runs:")
    lines.append(
        f"{'model':8} {'batch':>6} {'mode':14} {'1 proc':>10} {'2 procs':>10} {'speed-up':>8} "
        f"{'DDP 2':>10} {'vs DDP':>7} {'exposed comm':>13}"
    )
    for model in MODELS:
        for batch in BATCHES:
            for deterministic in (False, True):
                a = _case(one, model, batch, deterministic)
                b = _case(two, model, batch, deterministic)
                d = _case(ddp, model, batch)
                exposed = (b["exchange_ms"] + b["wait_ms"]) / b["step_ms"]
                lines.append(
                    f"{model:8} {batch:>6} {'deterministic' if deterministic else 'default':14} "
                    f"{a['samples_per_s']:>10.0f} {b['samples_per_s']:>10.0f} "
                    f"{b['samples_per_s'] / a['samples_per_s']:>7.2f}x "
                    f"{d['samples_per_s']:>10.0f} {b['samples_per_s'] / d['samples_per_s']:>6.2f}x "
                    f"{100 * exposed:>11.1f}% "
                    f"(exchange {b['exchange_ms']:.2f} ms + wait {b['wait_ms']:.2f} ms of "
                    f"{b['step_ms']:.2f} ms)"
                )
    a = _case(one, "mlp784", 1024)
    b = _case(two, "mlp784", 1024)
    bd = _case(two, "mlp784", 1024, True)
    d = _case(ddp, "mlp784", 1024)
    scaling = b["samples_per_s"] / a["samples_per_s"]
    versus = b["samples_per_s"] / d["samples_per_s"]
    cost = b["samples_per_s"] / bd["samples_per_s"] - 1
    bucket = two["bucketed"]
    bucket_ratio = bucket["bucketed_s"] / bucket["one_s"]
    verdicts = {
        "scaling 2x1 / 1x1, 784-256-128-10, batch 1024": (
            scaling,
            TARGETS["scaling"],
            _verdict(scaling, TARGETS["scaling"]),
        ),
        "densekit 2x1 / DDP 2x1": (versus, TARGETS["versus_ddp"], _verdict(versus, 1.5)),
        "deterministic cost (2 procs)": (cost, 0.15, _verdict(cost, 0.15, False)),
        "bucketed / one allreduce": (bucket_ratio, 1.2, _verdict(bucket_ratio, 1.2, False)),
    }
    lines.append("")
    lines.append(
        f"gradient of 784-256-128-10 ({bucket['bytes']} bytes) in {bucket['buckets']} buckets on "
        f"the communication thread: {1e6 * bucket['bucketed_s']:.0f} us (on the calling thread: "
        f"{1e6 * bucket['bucketed_inline_s']:.0f} us); one MPI_Allreduce: "
        f"{1e6 * bucket['one_s']:.0f} us"
    )
    lines.append("targets (issue 15):")
    for name, (value, target, verdict) in verdicts.items():
        lines.append(f"  {name}: {value:.2f} (target {target}) {verdict}")
    return lines, verdicts


def cost_model(one: dict, two: dict) -> tuple[list[str], dict]:
    costs = two["allreduce"]
    alpha, beta = costs["alpha_s"], costs["beta_s_per_byte"]
    lines = [
        "",
        f"MPI_Allreduce over shared memory, 2 processes: alpha {1e6 * alpha:.1f} us, "
        f"beta {1e12 * beta:.1f} ps/byte ({1e-9 / beta if beta > 0 else float('inf'):.1f} GB/s)",
        "cost model (per-sample compute measured on 1 process x 1 thread; strong scaling at the "
        "global batch, weak scaling at 1024 rows per process):",
    ]
    networks = {"shared memory (measured)": (alpha, beta), **NETWORKS}
    predictions: dict = {}
    for model, widths in MODELS.items():
        single = _case(one, model, 1024)
        per_sample = 1.0 / single["samples_per_s"]
        measured = _case(two, model, 1024)["samples_per_s"]
        predicted = 1024 / predict_step(widths, 1024, 2, per_sample, alpha, beta)
        lines.append(
            f"  {model}: 2 processes at batch 1024 predicted {predicted:.0f} samples/s, measured "
            f"{measured:.0f} ({100 * (predicted / measured - 1):+.0f}%)"
        )
        for network, (a, b) in networks.items():
            cells = []
            for processes in SCALES:
                for label, batch in (("strong", 1024), ("weak", 1024 * processes)):
                    step = predict_step(widths, batch, processes, per_sample, a, b)
                    rate = batch / step
                    efficiency = rate / (processes / per_sample)
                    predictions[f"{model}/{network}/{processes}/{label}"] = {
                        "samples_per_s": rate,
                        "efficiency": efficiency,
                    }
                    cells.append(f"P={processes} {label} {rate:,.0f}/s ({100 * efficiency:.0f}%)")
            lines.append(f"    {network}: " + "; ".join(cells))
    lines.append(
        "  where it stops scaling: the first layer holds most of an MLP's weights and its "
        "gradient is ready last, so its bucket is never hidden; once 2 log2(P) alpha + 2 bytes "
        "beta of that bucket reaches the per-process compute (batch / P rows), efficiency "
        "falls below 50% (strong scaling at a fixed global batch ends there first)."
    )
    return lines, predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=None, help="timed epochs per case")
    parser.add_argument(
        "--worker", choices=["densekit", "torch", "independent"], help=argparse.SUPPRESS
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.steps = args.steps or (6 if args.quick else 12)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.worker:
        worker(args)
        return 0
    started = time.perf_counter()
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    print(
        f"cpu: {cpu}, {len(os.sched_getaffinity(0))} usable cores; {args.steps} steps x "
        f"{args.repeats} repeats per case"
    )
    one = _launch(1, "densekit", args)
    two = _launch(2, "densekit", args)
    ddp = _launch(2, "torch", args)
    independent = _launch(2, "independent", args)
    lines, verdicts = summarize(one, two, ddp)
    ceiling = sum(independent["rates"]) / _case(one, "mlp784", 1024)["samples_per_s"]
    lines.append(
        f"ceiling here: two independent 1-thread trainings of 784-256-128-10 at batch 1024 at "
        f"once reach {ceiling:.2f}x the samples/s of one alone (no communication at all)"
    )
    model_lines, predictions = cost_model(one, two)
    print("\n".join(lines + model_lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"distributed-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "cpu": cpu,
                "command": " ".join(sys.argv),
                "one_process": one,
                "two_processes": two,
                "ddp": ddp,
                "independent_pair": independent,
                "targets": verdicts,
                "cost_model": predictions,
            },
            indent=1,
        )
    )
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
