"""Callbacks: hook order and logs, History, EarlyStopping, ModelCheckpoint,
LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN, CSVLogger, LambdaCallback, and the
progress output of verbose=0/1/2."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import densekit
from densekit import callbacks, optimizers
from densekit.layers import Dense, Input


def blobs(seed=0, n=120):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 4)) * 2
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.standard_normal((n, 4))).astype(np.float32), y


def classifier(learning_rate=0.01, seed=0):
    densekit.set_random_seed(seed)
    model = densekit.Sequential([Input((4,)), Dense(8, "relu"), Dense(3, "softmax")])
    model.compile(optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", ["accuracy"])
    return model


HOOKS = [name for name in vars(callbacks.Callback) if name.startswith("on_")]


class Recorder(callbacks.Callback):
    """Records every hook call (it overrides them all)."""

    def __init__(self):
        super().__init__()
        self.events = []


for _hook in HOOKS:
    setattr(Recorder, _hook, lambda self, *args, _hook=_hook: self.events.append((_hook, *args)))


def test_hooks_run_in_keras_order_with_logs():
    x, y = blobs()
    recorder = Recorder()
    model = classifier()
    model.fit(x, y, batch_size=50, epochs=2, validation_split=0.25, callbacks=[recorder], verbose=0)
    names = [event[0] for event in recorder.events]
    epoch = [
        "on_epoch_begin",
        *["on_train_batch_begin", "on_train_batch_end"] * 2,
        "on_test_begin",  # validation runs the test hooks, as in Keras
        "on_test_batch_begin",
        "on_test_batch_end",
        "on_test_end",
        "on_epoch_end",
    ]
    assert names == ["on_train_begin", *epoch, *epoch, "on_train_end"]
    assert recorder.params == {"verbose": 0, "epochs": 2, "steps": 2, "mode": "fit"}
    assert recorder.model is model
    batch_logs = next(e for e in recorder.events if e[0] == "on_train_batch_end")[2]
    assert set(batch_logs) == {"loss", "accuracy"}
    epoch_logs = next(e for e in recorder.events if e[0] == "on_epoch_end")[2]
    assert set(epoch_logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    recorder.events.clear()
    model.evaluate(x, y, batch_size=60, callbacks=[recorder], verbose=0)
    assert [e[0] for e in recorder.events] == ["on_test_begin"] + [
        "on_test_batch_begin",
        "on_test_batch_end",
    ] * 2 + ["on_test_end"]
    recorder.events.clear()
    model.predict(x, batch_size=100, callbacks=[recorder])
    assert [e[0] for e in recorder.events] == ["on_predict_begin"] + [
        "on_predict_batch_begin",
        "on_predict_batch_end",
    ] * 2 + ["on_predict_end"]


def test_batch_hooks_are_only_called_when_overridden():
    lists = callbacks.CallbackList([callbacks.History(), callbacks.EarlyStopping()], None, {})
    assert lists.batch_hooks == {"train": False, "test": False, "predict": False}
    lists = callbacks.CallbackList([callbacks.TerminateOnNaN()], None, {})
    assert lists.batch_hooks["train"]
    lists = callbacks.CallbackList([callbacks.LambdaCallback(on_batch_end=print)], None, {})
    assert lists.batch_hooks["train"]
    with pytest.raises(TypeError, match="callbacks"):
        callbacks.CallbackList([object()], None, {})


def test_history_records_every_epoch():
    x, y = blobs()
    model = classifier()
    history = model.fit(x, y, epochs=3, verbose=0)
    assert isinstance(history, callbacks.History)
    assert history.epoch == [0, 1, 2]
    assert list(history.history) == ["loss", "accuracy"]
    assert len(history.history["loss"]) == 3
    again = model.fit(x, y, epochs=5, initial_epoch=3, verbose=0)
    assert again.epoch == [3, 4] and model.history is again


def test_early_stopping_stops_and_restores_the_best_weights():
    x, y = blobs()
    model = classifier()
    snapshots = {}
    losses = iter([1.0, 0.5, 0.7, 0.6, 0.4, 0.3])

    class FakeMonitor(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = next(losses)
            snapshots[epoch] = self.model.get_weights()

    stopper = callbacks.EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    history = model.fit(x, y, epochs=6, callbacks=[FakeMonitor(), stopper], verbose=0)
    assert history.epoch == [0, 1, 2, 3]  # no improvement in epochs 2 and 3
    assert stopper.stopped_epoch == 3 and stopper.best == 0.5 and stopper.best_epoch == 1
    assert model.stop_training
    for restored, best in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(restored, best)


def test_early_stopping_min_delta_mode_and_baseline():
    class Model:
        stop_training = False

    stopper = callbacks.EarlyStopping(monitor="val_accuracy", min_delta=0.1, patience=5)
    assert stopper.mode == "max"
    stopper.set_model(Model())
    stopper.on_train_begin()
    stopper.best = 0.5
    stopper.on_epoch_end(0, {"val_accuracy": 0.55})  # within min_delta: no improvement
    assert stopper.best == 0.5
    stopper.on_epoch_end(1, {"val_accuracy": 0.65})
    assert stopper.best == 0.65

    stopper = callbacks.EarlyStopping(monitor="loss", patience=3, baseline=0.1)
    stopper.set_model(Model())
    stopper.on_train_begin()
    for epoch, loss in enumerate([0.9, 0.8, 0.7, 0.75]):
        stopper.on_epoch_end(epoch, {"loss": loss})
    # improving, but never beating the baseline, does not reset the wait: patience runs out
    # at the first epoch without improvement (Keras)
    assert stopper.model.stop_training and stopper.stopped_epoch == 3
    with pytest.warns(RuntimeWarning, match="'loss'.*not in the logs"):
        stopper.on_epoch_end(3, {"val_loss": 1.0})


def test_model_checkpoint_saves_every_epoch_or_only_the_best(tmp_path):
    x, y = blobs()
    model = classifier()
    every = callbacks.ModelCheckpoint(str(tmp_path / "model-{epoch:02d}.npz"), save_best_only=False)
    model.fit(x, y, epochs=2, callbacks=[every], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-01.npz", "model-02.npz"]
    loaded = densekit.load_model(tmp_path / "model-02.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))

    scores = iter([0.5, 0.7, 0.4, 0.6])
    saved = []

    class Score(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = next(scores)

    best = callbacks.ModelCheckpoint(
        tmp_path / "best.weights.npz", monitor="score", save_best_only=True, save_weights_only=True
    )
    original_save = model.save_weights
    model.save_weights = lambda path: (saved.append(path), original_save(path))
    model.fit(x, y, epochs=4, callbacks=[Score(), best], verbose=0)
    assert len(saved) == 2 and best.best == 0.4  # epochs 1 (0.5) and 3 (0.4)
    with pytest.raises(ValueError, match="save_freq"):
        callbacks.ModelCheckpoint("x.npz", save_freq=10)


def test_learning_rate_scheduler_sets_the_rate_each_epoch():
    x, y = blobs()
    model = classifier(learning_rate=0.1)
    seen = []
    watcher = callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(model.optimizer.learning_rate)
    )
    scheduler = callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    history = model.fit(x, y, epochs=3, callbacks=[scheduler, watcher], verbose=0)
    assert seen == [0.1, 0.05, 0.025]
    assert history.history["learning_rate"] == [0.1, 0.05, 0.025]
    one_argument = callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    model.fit(x, y, epochs=2, callbacks=[one_argument], verbose=0)
    assert math.isclose(model.optimizer.learning_rate, 0.02)


def test_reduce_lr_on_plateau_with_patience_cooldown_and_floor():
    x, y = blobs()
    model = classifier(learning_rate=1.0)
    scores = iter([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5])

    class Score(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = next(scores)

    reducer = callbacks.ReduceLROnPlateau(
        monitor="score", factor=0.5, patience=2, cooldown=1, min_lr=0.2
    )
    # keep the rate's effect on training out of the picture: only the schedule matters
    model.compile(optimizers.SGD(1.0), "sparse_categorical_crossentropy")
    history = model.fit(x * 0, y, epochs=8, callbacks=[Score(), reducer], verbose=0)
    # (the logged rate is the one the epoch ran with) waits at epochs 1, 2 -> 0.5; cooldown
    # at 3 (the wait restarts); waits 3, 4 -> 0.25; improvement at 6
    assert history.history["learning_rate"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25]
    reducer.wait, reducer.cooldown_counter = 5, 0
    reducer.on_epoch_end(8, {"score": 0.9})
    assert model.optimizer.learning_rate == 0.2  # floored at min_lr
    with pytest.raises(ValueError, match="factor"):
        callbacks.ReduceLROnPlateau(factor=1.5)


def test_terminate_on_nan_stops_at_the_first_invalid_batch(capsys):
    x, y = blobs()
    x[60:] = np.nan
    model = densekit.Sequential([Input((4,)), Dense(3, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    batches = []
    recorder = callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batches.append(batch)
    )
    history = model.fit(
        x,
        y,
        batch_size=30,
        epochs=3,
        shuffle=False,
        callbacks=[callbacks.TerminateOnNaN(), recorder],
        verbose=0,
    )
    assert batches == [0, 1, 2]
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    assert "Batch 2: Invalid loss, terminating training" in capsys.readouterr().out


def test_csv_logger_writes_and_appends(tmp_path):
    x, y = blobs()
    model = classifier()
    path = tmp_path / "log.csv"
    model.fit(
        x, y, epochs=2, validation_split=0.2, callbacks=[callbacks.CSVLogger(path)], verbose=0
    )
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert math.isclose(float(rows[1]["loss"]), model.history.history["loss"][1])
    model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        callbacks=[callbacks.CSVLogger(path, append=True)],
        verbose=0,
    )
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    model.fit(x, y, epochs=1, callbacks=[callbacks.CSVLogger(path, separator=";")], verbose=0)
    assert path.read_text().splitlines()[0] == "epoch;accuracy;loss"


def test_lambda_callback_hooks():
    x, y = blobs()
    calls = []
    hooks = callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append("begin"),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch", epoch, round(logs["loss"], 6))),
        on_batch_begin=lambda batch, logs: calls.append(("batch", batch)),
        on_train_end=lambda logs: calls.append("end"),
    )
    model = classifier()
    history = model.fit(x, y, batch_size=60, epochs=1, callbacks=[hooks], verbose=0)
    assert calls == [
        "begin",
        ("batch", 0),
        ("batch", 1),
        ("epoch", 0, round(history.history["loss"][0], 6)),
        "end",
    ]
    with pytest.raises(TypeError, match="on_nothing"):
        callbacks.LambdaCallback(on_nothing=print)


def test_stop_training_from_a_batch_hook_ends_the_epoch_and_the_run():
    x, y = blobs()
    model = classifier()

    def stop(batch, logs):
        if batch == 1:
            model.stop_training = True

    history = model.fit(
        x,
        y,
        batch_size=10,
        epochs=5,
        callbacks=[callbacks.LambdaCallback(on_train_batch_end=stop)],
        verbose=0,
    )
    assert history.epoch == [0]
    assert model.optimizer.iterations == 2


def test_verbose_levels(capsys):
    x, y = blobs()
    model = classifier()
    model.fit(x, y, epochs=2, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x)
    assert capsys.readouterr().out == ""

    model.fit(x, y, epochs=2, verbose=2, validation_split=0.1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("Epoch 2/2 - ") and "ms/step - loss: " in lines[1]
    assert "val_accuracy: " in lines[1]

    model.fit(x, y, batch_size=40, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "3/3" in out and "loss: " in out
    model.evaluate(x, y, verbose=1)
    assert "Evaluate" in capsys.readouterr().out
    model.predict(x, verbose=1)
    assert "Predict" in capsys.readouterr().out
    # "auto" is a line per epoch when stdout is not a terminal (pytest captures it)
    assert callbacks.resolve_verbose("auto") == 2
