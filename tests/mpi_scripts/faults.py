"""Wrong inputs and a failing rank under MPIStrategy (run by tests/test_distributed.py).

``checks``: each case must raise the same clear error on every rank before training; each
rank prints ``rank <r> <case>: <ExceptionType>: <message>`` and the run exits 0.
``raise``: rank 1 raises in a callback during training; under ``python -m mpi4py`` the job
must end with a non-zero status instead of waiting forever.
"""

from __future__ import annotations

import sys

from mpi4py import MPI

import densekit
from densekit import callbacks, layers
from densekit.distributed import MPIStrategy
from train import build_model, dataset


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
        other.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
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


if __name__ == "__main__":
    strategy = MPIStrategy()
    {"checks": checks, "raise": failing_rank}[sys.argv[1]](strategy)
