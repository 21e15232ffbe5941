"""Keras parity of the optimizers: the same training run in Keras 3 (torch backend) and densekit.

Each case trains one small model in both from the same initial weights, with shuffle=False and
a batch size that leaves a partial last batch, and asserts float32-level agreement of History,
the weights, evaluate and predict. Keras is imported once per module (slow); the module is
skipped where it is not installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import densekit
from densekit import callbacks, optimizers, schedules

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # another backend was chosen before this module ran
    pytest.skip("the parity runs use Keras's torch backend", allow_module_level=True)

# Keras 3 with NumPy 2 warns from its own code (not densekit's); those warnings are not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SAMPLES, FEATURES, HIDDEN, OUTPUTS = 50, 5, 7, 3
BATCH_SIZE = 16  # 50 = 3 * 16 + 2: a partial last batch
EPOCHS = 4
# float32 runs of the same rule in two libraries differ by rounding alone (their products and
# reductions round differently); after EPOCHS * 4 steps that stays below 1e-6 of each array's
# scale. A rule that differed (epsilon's place, the velocity's scale, a bias correction from
# betas not first rounded to float32 as Keras rounds them) differs by 1e-6 to 1e-3.
RTOL = 1e-6


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SAMPLES, FEATURES)).astype(np.float32)
    y = rng.standard_normal((SAMPLES, OUTPUTS)).astype(np.float32)
    return x, y


def initial_weights():
    rng = np.random.default_rng(1)
    shapes = [(FEATURES, HIDDEN), (HIDDEN,), (HIDDEN, OUTPUTS), (OUTPUTS,)]
    return [(0.5 * rng.standard_normal(shape)).astype(np.float32) for shape in shapes]


# name -> (keras optimizer factory, densekit optimizer factory, callback factories)
def same(name, **options):
    """One class name and its arguments for both libraries."""
    return (
        lambda: getattr(keras.optimizers, name)(**options),
        lambda: getattr(optimizers, name)(**options),
        None,
    )


CASES = {
    "sgd": same("SGD", learning_rate=0.1),
    "sgd_momentum_decay": same("SGD", learning_rate=0.05, momentum=0.9, weight_decay=0.1),
    "sgd_nesterov": same("SGD", learning_rate=0.05, momentum=0.8, nesterov=True),
    "adam": same("Adam", learning_rate=0.01),
    "adam_epsilon": same("Adam", learning_rate=0.01, epsilon=0.05),
    "adam_amsgrad": same("Adam", learning_rate=0.01, beta_2=0.9, amsgrad=True),
    "adamw": same("AdamW", learning_rate=0.01, weight_decay=0.1, epsilon=1e-3),
    "rmsprop": same("RMSprop", learning_rate=0.01, epsilon=1e-3),
    "rmsprop_centered_momentum": same(
        "RMSprop", learning_rate=0.005, momentum=0.5, centered=True, weight_decay=0.05
    ),
    "nadam": same("Nadam", learning_rate=0.01, epsilon=1e-3),
    "nadam_decay": same("Nadam", learning_rate=0.01, weight_decay=0.1),
    "adamax": same("Adamax", learning_rate=0.01, epsilon=1e-2),
    "adamax_decay": same("Adamax", learning_rate=0.01, beta_2=0.9, weight_decay=0.1),
    "adagrad": same("Adagrad", learning_rate=0.05),
    "adagrad_options": same(
        "Adagrad", learning_rate=0.05, initial_accumulator_value=0.5, epsilon=1e-2
    ),
    "lion": same("Lion", learning_rate=0.003),
    "lion_decay": same("Lion", learning_rate=0.003, beta_1=0.5, beta_2=0.9, weight_decay=0.5),
    "clipvalue": same("SGD", learning_rate=0.1, momentum=0.5, clipvalue=0.05),
    "clipnorm": same("Adam", learning_rate=0.01, clipnorm=0.1),
    "global_clipnorm": same("RMSprop", learning_rate=0.01, global_clipnorm=0.1),
    "ema": same("Adam", learning_rate=0.01, use_ema=True, ema_momentum=0.9),
    "ema_overwrite": same(
        "SGD", learning_rate=0.1, momentum=0.9, use_ema=True, ema_overwrite_frequency=3
    ),
    "accumulation": same("Adam", learning_rate=0.01, gradient_accumulation_steps=3),
    "accumulation_ema_nadam": same(
        "Nadam",
        learning_rate=0.01,
        gradient_accumulation_steps=2,
        use_ema=True,
        ema_momentum=0.8,
        ema_overwrite_frequency=2,
    ),
    "schedule_momentum": (
        lambda: keras.optimizers.SGD(
            keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5),
            momentum=0.9,
        ),
        lambda: optimizers.SGD(
            schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5), momentum=0.9
        ),
        None,
    ),
    "schedule_accumulation": (
        lambda: keras.optimizers.Adam(
            keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=2, decay_rate=0.7),
            gradient_accumulation_steps=2,
        ),
        lambda: optimizers.Adam(
            schedules.ExponentialDecay(0.02, decay_steps=2, decay_rate=0.7),
            gradient_accumulation_steps=2,
        ),
        None,
    ),
    "plateau_momentum": (
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: optimizers.SGD(0.1, momentum=0.9),
        # min_delta above any improvement: the rate halves after every epoch
        (
            lambda: keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10),
            lambda: callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10),
        ),
    ),
    "plateau_rmsprop_momentum": (
        lambda: keras.optimizers.RMSprop(0.01, momentum=0.8),
        lambda: optimizers.RMSprop(0.01, momentum=0.8),
        (
            lambda: keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10),
            lambda: callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10),
        ),
    ),
}


def keras_run(make_optimizer, make_callback, x, y):
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="tanh"),
            keras.layers.Dense(OUTPUTS),
        ]
    )
    model.set_weights(initial_weights())
    model.compile(make_optimizer(), "mse")
    extra = [make_callback()] if make_callback else []
    history = model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=extra
    )
    return (
        history.history,
        model.get_weights(),
        model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0),
        model.predict(x, batch_size=BATCH_SIZE, verbose=0),
    )


def densekit_run(make_optimizer, make_callback, x, y):
    model = densekit.Sequential(
        [
            densekit.Input((FEATURES,)),
            densekit.layers.Dense(HIDDEN, activation="tanh"),
            densekit.layers.Dense(OUTPUTS),
        ]
    )
    model.set_weights(initial_weights())
    model.compile(make_optimizer(), "mse")
    extra = [make_callback()] if make_callback else []
    history = model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=extra
    )
    return (
        history.history,
        model.get_weights(),
        model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0),
        model.predict(x, batch_size=BATCH_SIZE, verbose=0),
    )


def assert_close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-3)
    error = float(np.max(np.abs(got - want), initial=0.0)) / scale
    assert error <= RTOL, f"{what}: relative difference {error:.2e} > {RTOL:.0e}"


@pytest.mark.parametrize("case", list(CASES))
def test_training_matches_keras(case):
    make_keras, make_densekit, callback_pair = CASES[case]
    keras_callback, densekit_callback = callback_pair or (None, None)
    x, y = data()
    want = keras_run(make_keras, keras_callback, x, y)
    got = densekit_run(make_densekit, densekit_callback, x, y)
    (want_history, want_weights, want_loss, want_prediction) = want
    (got_history, got_weights, got_loss, got_prediction) = got
    assert set(want_history) <= set(got_history)
    for key in want_history:
        assert_close(got_history[key], want_history[key], f"history[{key!r}]")
    for index, (ours, theirs) in enumerate(zip(got_weights, want_weights, strict=True)):
        assert_close(ours, theirs, f"weight {index}")
    assert_close(got_loss, want_loss, "evaluate")
    assert_close(got_prediction, want_prediction, "predict")
    # The run changed the weights: a case that trains nothing would pass trivially.
    assert max(np.max(np.abs(w - w0)) for w, w0 in zip(got_weights, initial_weights())) > 1e-3


KERAS_NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Nadam", "Adamax", "Adagrad", "Lion"]


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_defaults_and_config_match_keras(name):
    # Keras's defaults, and get_config's keys and values for the options both libraries have.
    theirs = getattr(keras.optimizers, name)().get_config()
    ours = getattr(optimizers, name)().get_config()
    assert theirs.pop("loss_scale_factor") is None  # densekit has no loss scaling
    theirs.pop("name"), ours.pop("name")  # Keras numbers its instances' names (adam_3)
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        if isinstance(value, float):
            assert ours[key] == pytest.approx(value, rel=1e-7), key  # Keras's rate is float32
        else:
            assert ours[key] == value, key
