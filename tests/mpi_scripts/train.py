"""Train a small MLP under MPIStrategy and write what tests/test_distributed.py compares.

Run by the tests under ``mpiexec -n N python -m mpi4py``. Each rank writes
``OUT/rank<r>.npz`` (weights, predictions) and ``OUT/rank<r>.json`` (history, evaluation,
thread count); files written through the model (checkpoints, the CSV log, the final save)
go to ``OUT/files<r>/``, so that a file written by another rank than 0 shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import densekit
from densekit import callbacks, layers, optimizers, schedules
from densekit.distributed import MPIStrategy

FEATURES, CLASSES, ROWS = 12, 4, 240


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = (x[:, :CLASSES].argmax(axis=1) + (x[:, 5] > 1.0)) % CLASSES
    return x[:200], y[:200], x[200:], y[200:]


def sample_weights():
    """Weights of the 200 training samples (fit weighs each slice's loss by them)."""
    return np.random.default_rng(1).uniform(0.5, 1.5, 200).astype(np.float32)


def build_model(seed: int = 1, frozen: bool = False) -> densekit.Sequential:
    densekit.set_random_seed(seed)
    model = densekit.Sequential(
        [
            layers.Input((FEATURES,)),
            layers.Dense(24, "relu", kernel_regularizer=densekit.regularizers.L2(1e-3)),
            layers.Dense(16, "tanh"),
            layers.Dense(CLASSES, "softmax"),
        ]
    )
    model.layers[1].trainable = not frozen  # the middle layer: gradients on both sides
    model.compile(
        optimizers.Adam(schedules.CosineDecay(0.01, decay_steps=40)),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # weighted: the ranks' metric states (sums of weighted hits) add up across slots
        weighted_metrics=["accuracy", densekit.metrics.SparseTopKCategoricalAccuracy(k=2)],
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--initial-epoch", type=int, default=0)
    parser.add_argument("--resume-from", type=Path, default=None)
    parser.add_argument("--fit-async", action="store_true")
    parser.add_argument("--dataset", action="store_true", help="per-rank data: Dataset.shard")
    parser.add_argument("--frozen", action="store_true", help="freeze the middle layer")
    parser.add_argument(
        "--other-weights", action="store_true", help="ranks > 0 start from other weights"
    )
    args = parser.parse_args()
    strategy = MPIStrategy(deterministic=args.deterministic, bucket_bytes=512)
    rank = strategy.rank
    files = args.out / f"files{rank}"
    files.mkdir(parents=True, exist_ok=True)
    x, y, x_val, y_val = dataset()
    if args.resume_from is not None:
        model = densekit.load_model(args.resume_from)
    else:  # fit starts every rank from rank 0's weights
        model = build_model(seed=1 + (args.other_weights and rank > 0), frozen=args.frozen)
    kept = [
        callbacks.ModelCheckpoint(str(files / "ckpt-{epoch}.npz"), monitor="loss"),
        callbacks.CSVLogger(files / "log.csv"),
        callbacks.EarlyStopping(monitor="val_loss", patience=50),
    ]
    options = dict(
        batch_size=32,
        epochs=args.epochs,
        initial_epoch=args.initial_epoch,
        seed=5,
        verbose=2,
        callbacks=kept,
        validation_data=(x_val, y_val),
        strategy=strategy,
    )
    weights = sample_weights()
    if args.dataset:
        data = densekit.data.Dataset.from_tensor_slices((x, y, weights))
        data = data.shard(strategy.size, rank)
        history = model.fit(data.batch(32 // strategy.size), **{**options, "batch_size": None})
    elif args.fit_async:
        history = model.fit_async(x, y, sample_weight=weights, **options).result(timeout=120)
    else:
        history = model.fit(x, y, sample_weight=weights, **options)
    model.save(files / "final.npz")
    evaluation = model.evaluate(x_val, y_val, batch_size=16, strategy=strategy, verbose=0)
    predictions = model.predict(x_val, batch_size=8, strategy=strategy)
    np.savez(
        args.out / f"rank{rank}.npz",
        weights=np.concatenate([w.ravel() for w in model.get_weights()]),
        predictions=predictions,
    )
    root_only = model.predict(x_val, strategy=MPIStrategy(predict_to="root"))
    facts = {
        "root_prediction": None
        if root_only is None
        else bool(np.array_equal(root_only, predictions)),
        "history": history.history,
        "evaluation": evaluation,
        "threads": densekit.get_num_threads(),
        "size": strategy.size,
    }
    (args.out / f"rank{rank}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main()
