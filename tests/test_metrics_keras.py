"""densekit's metrics against Keras 3's (torch backend) on the same batches: the running
result after several update_state calls. Skipped where keras is not installed."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from densekit import metrics  # noqa: E402

RNG = np.random.default_rng(3)
BATCHES = [
    (np.abs(RNG.standard_normal((n, 4))) + 0.1, np.abs(RNG.standard_normal((n, 4))))
    for n in (5, 7, 3)
]


@pytest.mark.parametrize(
    "name",
    ["MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "RootMeanSquaredError"],
)
def test_running_result_matches_keras(name):
    ours, theirs = getattr(metrics, name)(), getattr(keras.metrics, name)()
    for y_true, y_pred in BATCHES:
        ours.update_state(y_true, y_pred)
        theirs.update_state(y_true.astype(np.float32), y_pred.astype(np.float32))
    expected = float(theirs.result().detach().cpu().numpy())
    assert ours.result() == pytest.approx(expected, rel=1e-5)
    ours.reset_state()
    assert ours.result() == 0.0


@pytest.mark.parametrize("name", ["mape", "msle", "root_mean_squared_error"])
def test_metrics_by_name(name):
    metric = metrics.get(name)
    assert metric.name == name
    assert type(metrics.deserialize(metrics.serialize(metric))) is type(metric)
