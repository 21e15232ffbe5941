"""densekit's loss classes against Keras 3 itself (torch backend) on the same data: every
reduction, with and without sample weights, and a short SGD training run per new loss (same
initial weights, shuffle=False, a partial last batch) compared on History, weights, evaluate
and predict. Skipped where keras is not installed; keras is imported once for the module."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import densekit  # noqa: E402
from densekit import losses  # noqa: E402

REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)
RNG = np.random.default_rng(0)
N, D = 7, 4
P = RNG.standard_normal((N, D)).astype(np.float32)
T = RNG.standard_normal((N, D)).astype(np.float32)
POSITIVE = np.abs(P) + 0.01
PROBS = RNG.random((N, D)).astype(np.float32)
PROBS /= PROBS.sum(axis=1, keepdims=True)
BINARY = RNG.integers(0, 2, (N, D)).astype(np.float32)
ONE_HOT = np.eye(D, dtype=np.float32)[RNG.integers(0, D, N)]
SOFTMAX = np.exp(P) / np.exp(P).sum(axis=1, keepdims=True)
WEIGHTS = RNG.uniform(0, 2, N).astype(np.float32)
# class name: (y_true, y_pred as Keras takes it)
CASES = {
    "MeanAbsolutePercentageError": (T, P),
    "MeanSquaredLogarithmicError": (np.abs(T), POSITIVE),
    "LogCosh": (T, P),
    "Poisson": (np.abs(T), POSITIVE),
    "KLDivergence": (PROBS, POSITIVE / POSITIVE.sum(axis=1, keepdims=True)),
    "Hinge": (BINARY, P),
    "SquaredHinge": (BINARY, P),
    "CategoricalHinge": (ONE_HOT, P),
    "CosineSimilarity": (T, P),
    "BinaryFocalCrossentropy": (BINARY, 1 / (1 + np.exp(-P))),
    "CategoricalFocalCrossentropy": (ONE_HOT, SOFTMAX),
}


def numpy_of(value):
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_class_matches_keras(name, reduction, weighted):
    y_true, y_pred = CASES[name]
    weights = WEIGHTS if weighted else None
    expected = numpy_of(getattr(keras.losses, name)(reduction=reduction)(y_true, y_pred, weights))
    got = np.asarray(getattr(losses, name)(reduction=reduction)(y_true, y_pred, weights))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip(name):
    loss = getattr(losses, name)(reduction="mean_with_sample_weight")
    again = losses.deserialize(losses.serialize(loss))
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()
    assert type(losses.get(loss.name)) is type(loss)


# loss name for compile, output activation, target
TRAINING = {
    "mean_absolute_percentage_error": (None, T + 3.0),
    "mean_squared_logarithmic_error": ("softplus", np.abs(T)),
    "log_cosh": (None, T),
    "poisson": ("softplus", np.abs(T)),
    "kl_divergence": ("softmax", PROBS),
    "hinge": (None, BINARY),
    "squared_hinge": (None, BINARY),
    "categorical_hinge": (None, ONE_HOT),
    "cosine_similarity": (None, T),
    "binary_focal_crossentropy": ("sigmoid", BINARY),
    "categorical_focal_crossentropy": ("softmax", ONE_HOT),
}


def keras_weights(model):
    return [w.numpy() for w in model.weights]


# Keras's torch variables warn (NumPy 2's copy keyword) when Keras turns them into arrays.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("loss", sorted(TRAINING))
def test_training_matches_keras(loss):
    activation, target = TRAINING[loss]
    rng = np.random.default_rng(1)
    n = 23  # batch size 5 leaves a partial last batch of 3
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = np.resize(target, (n, D)).astype(np.float32)
    k_model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(D, activation=activation),
        ]
    )
    d_model = densekit.Sequential(
        [
            densekit.layers.Dense(6, activation="tanh", input_dim=3),
            densekit.layers.Dense(D, activation=activation or "linear"),
        ]
    )
    d_model.build()
    d_model.set_weights(keras_weights(k_model))
    k_model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss)
    d_model.compile(optimizer=densekit.optimizers.SGD(0.05), loss=loss)
    k_hist = k_model.fit(x, y, batch_size=5, epochs=3, shuffle=False, verbose=0)
    d_hist = d_model.fit(x, y, batch_size=5, epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(d_hist.history["loss"], k_hist.history["loss"], rtol=1e-4)
    for got, expected in zip(d_model.get_weights(), keras_weights(k_model), strict=True):
        np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        d_model.evaluate(x, y, verbose=0), k_model.evaluate(x, y, verbose=0), rtol=1e-4
    )
    np.testing.assert_allclose(
        d_model.predict(x, verbose=0), k_model.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )
