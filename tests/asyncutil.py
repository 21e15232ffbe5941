"""Helpers of the asynchronous-training tests: a hang guard, small models and data."""

from __future__ import annotations

import faulthandler
import sys
import threading

import numpy as np
import pytest

import densekit
from densekit import layers, losses

HANG_SECONDS = 120  # a whole test file never takes this long; a hang does
TIMEOUT = 60  # for one wait on a job, a thread or an event


@pytest.fixture(autouse=True)
def fail_on_hang():
    """A test that hangs dumps every thread's stack and ends the run instead of blocking CI."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


def classification(seed=0, n=600, features=16, classes=4):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)) * 2.0
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.standard_normal((n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def small_model(features=16, classes=4, optimizer="adam", seed=0, hidden=32):
    densekit.set_random_seed(seed)
    model = densekit.Sequential(
        [layers.Input((features,)), layers.Dense(hidden, "relu"), layers.Dense(classes)]
    )
    model.compile(
        optimizer, losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def densekit_threads(grace=5.0) -> list[threading.Thread]:
    """Threads of densekit's pipelines and jobs still alive after ``grace`` seconds (a job's
    thread may take a moment to return once its future is done; the inference pool of
    predict_async is long-lived and not counted)."""
    names = ("densekit-prefetch", "densekit-fit", "densekit-hogwild")
    threads = [t for t in threading.enumerate() if t.name.startswith(names)]
    for thread in threads:
        thread.join(timeout=grace)
    return [t for t in threads if t.is_alive()]


def assert_same_state(model, other):
    for mine, theirs in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert model.optimizer.iterations == other.optimizer.iterations
    for name, state in model.optimizer.variables.items():
        np.testing.assert_array_equal(state, other.optimizer.variables[name])
