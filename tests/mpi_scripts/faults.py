"""Wrong inputs and a failing rank under MPIStrategy (run by tests/test_distributed.py).

``checks``: each case must raise the same clear error on every rank before training; each
rank prints ``rank <r> <case>: <ExceptionType>: <message>`` and the run exits 0.
``raise``: rank 1 raises in a callback during training; under ``python -m mpi4py`` the job
must end with a non-zero status instead of waiting forever. ``kill``: rank 1 dies of SIGKILL
during training; mpiexec must end the job. ``gil``: the main thread runs while another
waits in an MPI call. ``stop``: a stop asked on one rank stops every rank.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import mpi4py
import numpy as np

import densekit
from densekit import callbacks, layers
from densekit.distributed import MPIStrategy
from train import build_model, dataset

MPI = None  # mpi4py.MPI, imported in main once the thread level is chosen


def report(rank: int, case: str, run) -> None:
    """Run a case; rank 0 prints every rank's outcome (mpiexec's forwarding of several ranks'
    output may cut lines)."""
    try:
        run()
    except (ValueError, TypeError) as error:
        line = f"rank {rank} {case}: {type(error).__name__}: {error}"
    else:
        line = f"rank {rank} {case}: no error"
    lines = MPI.COMM_WORLD.gather(line, root=0)
    if rank == 0:
        print("\n".join(lines), flush=True)


def checks(strategy: MPIStrategy) -> None:
    rank = strategy.rank
    x, y, _, _ = dataset()
    model = build_model()
    shorter = x[:-1] if rank == 1 else x
    report(rank, "lengths", lambda: model.fit(shorter, y[: len(shorter)], strategy=strategy))
    report(rank, "batch", lambda: model.fit(x, y, batch_size=1, verbose=0, strategy=strategy))
    other = build_model()
    if rank == 1:
        other = densekit.Sequential(
            [layers.Input((x.shape[1],)), layers.Dense(25, "relu"), layers.Dense(4, "softmax")]
        )
        other.compile(
            "adam",
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
            weighted_metrics=["accuracy", densekit.metrics.SparseTopKCategoricalAccuracy(k=2)],
        )
    report(rank, "config", lambda: other.fit(x, y, verbose=0, strategy=strategy))
    deterministic = MPIStrategy(deterministic=True)
    data = densekit.data.Dataset.from_tensor_slices((x, y)).batch(16)
    report(rank, "dataset", lambda: build_model().fit(data, verbose=0, strategy=deterministic))


def failing_rank(strategy: MPIStrategy) -> None:
    x, y, _, _ = dataset()

    def fail(batch, logs):
        if strategy.rank == 1 and batch == 2:
            raise RuntimeError("rank 1 fails on purpose")

    hook = callbacks.LambdaCallback(on_train_batch_end=fail)
    build_model().fit(x, y, epochs=50, verbose=0, callbacks=[hook], strategy=strategy)


def killed_rank(strategy: MPIStrategy) -> None:
    x, y, _, _ = dataset()

    def die(batch, logs):
        if strategy.rank == 1 and batch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    hook = callbacks.LambdaCallback(on_train_batch_end=die)
    build_model().fit(x, y, epochs=50, verbose=0, callbacks=[hook], strategy=strategy)


def serialized(strategy: MPIStrategy) -> None:
    x, y, _, _ = dataset()
    model = build_model()
    try:
        model.fit_async(x, y, verbose=0, strategy=strategy)
    except RuntimeError as error:
        line = f"rank {strategy.rank} serialized: RuntimeError: {error}"
    else:
        line = f"rank {strategy.rank} serialized: no error"
    history = model.fit(x, y, epochs=1, verbose=0, strategy=strategy)
    trained = not strategy.overlap and len(history.history["loss"]) == 1
    lines = MPI.COMM_WORLD.gather(line, root=0)
    outcomes = MPI.COMM_WORLD.gather(trained, root=0)
    if strategy.rank == 0:
        print("\n".join(lines))
        for rank, ok in enumerate(outcomes):
            print(f"rank {rank} fit without overlap: {'trained' if ok else 'failed'}")


def stop_on_one_rank(strategy: MPIStrategy) -> None:
    """Rank 1 alone sets stop_training after batch 2: every rank stops after that step."""
    x, y, _, _ = dataset()
    model = build_model()

    def stop(batch, logs):
        if strategy.rank == 1 and batch == 2:
            model.stop_training = True

    hook = callbacks.LambdaCallback(on_train_batch_end=stop)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[hook], strategy=strategy)
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    facts = (len(history.epoch), model.optimizer.iterations, weights.tobytes())
    everyone = MPI.COMM_WORLD.gather(facts, root=0)
    if strategy.rank == 0:
        same = all(f == everyone[0] for f in everyone)
        print(f"epochs {everyone[0][0]} steps {everyone[0][1]} same on every rank: {same}")


def gil(strategy: MPIStrategy) -> None:
    """Whether the main thread runs Python while another thread waits inside an MPI call
    (mpi4py releases the GIL there, which the overlapped reduction relies on)."""
    comm = strategy.gradient_comm
    buffer = np.zeros(4)
    if strategy.rank == 0:
        inside = threading.Event()

        def receive():
            inside.set()
            comm.Recv(buffer, source=1, tag=7)

        thread = threading.Thread(target=receive)
        thread.start()
        inside.wait()
        time.sleep(0.05)  # the thread is now blocked in MPI_Recv: rank 1 sends later
        iterations = 0
        while thread.is_alive():
            iterations += 1
            if iterations == 1000:
                comm.send(None, dest=1, tag=8)  # go ahead
        thread.join()
        print(f"main thread iterations while a thread waited in MPI_Recv: {iterations}")
    else:
        comm.recv(source=0, tag=8)
        comm.Send(buffer, dest=0, tag=7)


if __name__ == "__main__":
    if sys.argv[1] == "serialized":  # MPI starts below MPI_THREAD_MULTIPLE
        mpi4py.rc.thread_level = "serialized"
    from mpi4py import MPI

    strategy = MPIStrategy()
    cases = {"checks": checks, "raise": failing_rank, "kill": killed_rank}
    cases["serialized"], cases["gil"], cases["stop"] = serialized, gil, stop_on_one_rank
    cases[sys.argv[1]](strategy)
