"""Hogwild! training: one worker is plain training, several converge on the digits, the step
count and schedule are global, and what the strategy refuses."""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

from densekit import callbacks, optimizers, schedules, training

from .asyncutil import (
    TIMEOUT,
    assert_same_state,
    classification,
    densekit_threads,
    fail_on_hang,  # noqa: F401 - autouse fixture
    small_model,
)


def test_one_worker_is_ordinary_training():
    x, y = classification()
    plain, hogwild = small_model(), small_model()
    expected = plain.fit(x, y, batch_size=32, epochs=2, seed=1, verbose=0)
    history = hogwild.fit(x, y, batch_size=32, epochs=2, seed=1, verbose=0, strategy="hogwild")
    assert history.history == expected.history
    assert_same_state(plain, hogwild)


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_converge_and_count_every_step(workers):
    x, y = classification(n=1200)
    model = small_model(optimizer=optimizers.SGD(0.05, momentum=0.9))
    history = model.fit(
        x, y, batch_size=16, epochs=4, workers=workers, strategy="hogwild", verbose=0
    )
    steps_per_epoch = sum(
        -(-len(shard) // 16) for shard in np.array_split(np.arange(1200), workers)
    )
    assert model.optimizer.iterations == 4 * steps_per_epoch
    assert history.history["accuracy"][-1] > 0.9
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.9 and np.isfinite(loss)
    assert densekit_threads() == []


def test_digits_accuracy_close_to_synchronous_training():
    pytest.importorskip("sklearn")
    from densekit.demo import load_digits_split

    x_train, y_train, x_test, y_test = load_digits_split(seed=0)
    accuracies = {}
    for workers in (1, 2):
        model = small_model(features=64, classes=10, hidden=128, optimizer="adam")
        model.fit(
            x_train,
            y_train,
            batch_size=16,
            epochs=8,
            seed=0,
            verbose=0,
            workers=workers,
            strategy="hogwild",
        )
        accuracies[workers] = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracies[1] > 0.9
    assert accuracies[2] > accuracies[1] - 0.04, accuracies


def test_the_schedule_follows_the_global_step():
    x, y = classification(n=256)
    schedule = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = small_model(optimizer=optimizers.SGD(schedule))

    class Rate(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.rate = self.model.optimizer.learning_rate

    rate = Rate()
    model.fit(
        x, y, batch_size=32, epochs=1, workers=2, strategy="hogwild", verbose=0, callbacks=[rate]
    )
    assert model.optimizer.iterations == 8
    assert model.optimizer.learning_rate == pytest.approx(0.1 * 0.5**8)


def test_refusals():
    x, y = classification(n=64)
    model = small_model()
    with pytest.raises(ValueError, match="workers"):
        model.fit(x, y, workers=2, verbose=0)
    with pytest.raises(ValueError, match="strategy"):
        model.fit(x, y, strategy="allreduce", verbose=0)
    with pytest.raises(ValueError, match="batch hooks"):
        model.fit(
            x, y, workers=2, strategy="hogwild", verbose=0, callbacks=[callbacks.TerminateOnNaN()]
        )


def test_an_error_in_a_worker_surfaces(monkeypatch):
    x, y = classification(n=256)
    model = small_model()

    class Failing(callbacks.Callback):
        pass

    def failing_step(state, plan):
        raise FloatingPointError("worker failed")

    monkeypatch.setattr(training.TrainingState, "compute_gradients", failing_step)
    with pytest.raises(FloatingPointError, match="worker failed"):
        model.fit(x, y, workers=2, strategy="hogwild", verbose=0)
    assert not model.training and densekit_threads() == []


def test_ctrl_c_stops_the_workers_before_fit_raises():
    x, y = classification(n=20000)
    model = small_model(hidden=128)
    started = threading.Event()

    def interrupt():
        assert started.wait(TIMEOUT)
        time.sleep(0.05)  # the workers are stepping
        _thread.interrupt_main()

    sender = threading.Thread(target=interrupt)
    sender.start()
    begin = callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: started.set())
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x, y, batch_size=4, epochs=10**6, workers=2, strategy="hogwild", verbose=0,
            callbacks=[begin],
        )  # fmt: skip
    sender.join(TIMEOUT)
    assert densekit_threads() == []
    weights, steps = model.get_weights(), model.optimizer.iterations
    # the workers stepped (how many epochs passed before the interrupt depends on the load:
    # an epoch of 5000 steps takes a few tens of milliseconds on a fast core)
    assert steps > 0
    time.sleep(0.2)
    for now, then in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(now, then)  # no worker stepped after fit raised


def test_weight_averaging_is_refused():
    # Keras's moving average follows one sequence of steps; the workers make several at once.
    x, y = classification()
    model = small_model(optimizer=optimizers.SGD(0.1, use_ema=True))
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"^optimizer: use_ema"):
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, strategy="hogwild", workers=2)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
