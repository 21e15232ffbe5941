"""``python -m densekit.demo``: train an MLP on scikit-learn's handwritten digits.

The digits (1797 images of 8x8 pixels, bundled with scikit-learn: nothing is downloaded) are
split 80/20 into training and test sets; a 64-256-128-10 MLP trains with Adam on a cosine
learning-rate schedule and label smoothing, with a progress bar; then the test accuracy, the
time per epoch and the thread count are printed. Needs the
``demo`` extra: ``pip install densekit[demo]``.

Launched on several MPI processes (``mpiexec -n 2 python -m mpi4py -m densekit.demo``, the
``mpi`` extra), it trains data-parallel with ``strategy="mpi"`` (32 is then the global batch)
and rank 0 prints the report.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import densekit
from densekit import callbacks, layers, losses, optimizers, schedules


def load_digits_split(seed: int, test_fraction: float = 0.2):
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1], a seeded stratified split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("The demo needs scikit-learn for its data: pip install 'densekit[demo]'")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test[members[: round(len(members) * test_fraction)]] = True
    return x[~test], y[~test], x[test], y[test]


def build_model(seed: int, total_steps: int) -> densekit.Sequential:
    densekit.set_random_seed(seed)
    model = densekit.Sequential(
        [
            layers.Input((64,)),
            layers.Dense(256, "relu"),
            layers.Dense(128, "relu"),
            layers.Dense(10, "softmax"),
        ],
        name="digits_mlp",
    )
    model.compile(
        optimizer=optimizers.Adam(schedules.CosineDecay(0.003, decay_steps=total_steps)),
        loss=losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )
    return model


class EpochTimer(callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def mpi_strategy():
    """An MPIStrategy when mpiexec started several processes under ``python -m mpi4py``
    (which imported mpi4py), else None: a plain run never imports MPI."""
    if "mpi4py" not in sys.modules:
        return None
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() == 1:
        return None
    from densekit.distributed import MPIStrategy

    return MPIStrategy()


def train(epochs=30, batch_size=32, seed=0, verbose="auto", strategy=None) -> dict:
    """Train on the digits and return the test accuracy, loss and timings (data-parallel
    over MPI with an MPIStrategy ``strategy``; ``batch_size`` is then the global batch)."""
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    one_hot = np.eye(10, dtype=np.float32)  # the smoothed loss takes class probabilities
    y_train, y_test = one_hot[y_train], one_hot[y_test]
    model = build_model(seed, epochs * -(-len(x_train) // batch_size))
    root = strategy is None or strategy.is_root
    if verbose and root:
        print(
            f"densekit {densekit.__version__}: digits, {len(x_train)} training and {len(x_test)} "
            f"test images, {model.count_params():,} parameters, "
            f"{densekit.get_num_threads()} threads"
        )
    timer = EpochTimer()
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        callbacks=[timer],
        verbose=verbose,
        seed=seed,
        strategy=strategy,
    )
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0, strategy=strategy)
    return {
        "accuracy": accuracy,
        "loss": loss,
        "seconds": seconds,
        "seconds_per_epoch": float(np.median(timer.seconds)) if timer.seconds else 0.0,
        "model": model,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m densekit.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--verbose",
        default="auto",
        choices=["auto", "0", "1", "2"],
        help="1: progress bar, 2: a line per epoch, auto: a bar on a terminal, else lines",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        densekit.set_num_threads(args.threads)
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    strategy = mpi_strategy()
    result = train(args.epochs, args.batch_size, args.seed, verbose, strategy)
    if strategy is not None and not strategy.is_root:
        return 0
    processes = "" if strategy is None else f"{strategy.size} processes x "
    print(f"test accuracy: {result['accuracy']:.2%} (loss {result['loss']:.4f})")
    print(
        f"training: {result['seconds']:.2f} s, {result['seconds_per_epoch'] * 1e3:.1f} ms per "
        f"epoch (median), {processes}{densekit.get_num_threads()} threads"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
