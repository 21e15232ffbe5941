"""Keras parity of the metrics: densekit's metric classes against Keras 3's (torch backend).

Standalone, each metric accumulates several batches (with and without sample weights) in
both libraries and the results agree to float32 precision; string identifiers, default
names and configs match Keras's. Then short training runs (same initial weights,
shuffle=False, a partial last batch) with ``metrics`` and ``weighted_metrics``, sample and
class weights and validation data: History holds the same keys and values in both. Keras is
imported once for the module; the module is skipped where it is not installed.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

import densekit
from densekit import metrics, optimizers

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # another backend was chosen before this module ran
    pytest.skip("the parity runs use Keras's torch backend", allow_module_level=True)

# Keras 3 with NumPy 2 warns from its own code (not densekit's).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

WIDTH = 3
# class name, arguments, targets: "binary" (0/1 per output), "one_hot", "labels", "real"
STANDALONE = [
    ("AUC", {}, "binary"),
    ("AUC", {"curve": "PR"}, "binary"),
    ("AUC", {"curve": "PR", "summation_method": "minoring"}, "binary"),
    ("AUC", {"summation_method": "majoring", "num_thresholds": 17}, "binary"),
    ("AUC", {"curve": "PRGAIN"}, "binary"),
    ("AUC", {"thresholds": [0.6, 0.1, 0.35]}, "binary"),
    ("AUC", {"multi_label": True}, "binary"),
    ("AUC", {"curve": "PR", "multi_label": True, "label_weights": [1.0, 2.0, 0.5]}, "binary"),
    ("AUC", {"label_weights": [1.0, 2.0, 0.5]}, "binary"),
    ("AUC", {"from_logits": True}, "binary"),
    ("Precision", {}, "binary"),
    ("Precision", {"thresholds": [0.7, 0.2, 0.5]}, "binary"),
    ("Precision", {"top_k": 2}, "one_hot"),
    ("Precision", {"class_id": 1}, "one_hot"),
    ("Precision", {"top_k": 2, "class_id": 0, "thresholds": 0.3}, "binary"),
    ("Recall", {}, "binary"),
    ("Recall", {"thresholds": [0.7, 0.2]}, "binary"),
    ("Recall", {"top_k": 1}, "one_hot"),
    ("F1Score", {}, "one_hot"),
    ("F1Score", {"average": "micro"}, "binary"),
    ("F1Score", {"average": "macro", "threshold": 0.5}, "binary"),
    ("F1Score", {"average": "weighted"}, "one_hot"),
    ("FBetaScore", {"beta": 2.0, "average": "macro", "threshold": 0.4}, "binary"),
    ("R2Score", {}, "real"),
    ("R2Score", {"class_aggregation": None}, "real"),
    ("R2Score", {"class_aggregation": "variance_weighted_average"}, "real"),
    ("R2Score", {"num_regressors": 2}, "real"),
    ("TopKCategoricalAccuracy", {"k": 2}, "one_hot"),
    ("SparseTopKCategoricalAccuracy", {"k": 2}, "labels"),
    ("BinaryAccuracy", {"threshold": 0.4}, "binary"),
    ("CategoricalAccuracy", {}, "one_hot"),
    ("SparseCategoricalAccuracy", {}, "labels"),
    ("MeanAbsoluteError", {}, "real"),
    ("RootMeanSquaredError", {}, "real"),
]


def numpy_of(value):
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


def batches(targets: str, seed: int):
    """Three batches (5, 7 and 1 rows) of (y_true, y_pred, sample_weight), float32."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (5, 7, 1):
        y_pred = rng.random((n, WIDTH)).astype(np.float32)
        if targets == "binary":
            y_true = (rng.random((n, WIDTH)) > 0.6).astype(np.float32)
        elif targets == "one_hot":
            y_true = np.eye(WIDTH, dtype=np.float32)[rng.integers(0, WIDTH, n)]
        elif targets == "labels":
            y_true = rng.integers(0, WIDTH, n)
        else:
            y_true = rng.standard_normal((n, WIDTH)).astype(np.float32)
            y_pred = (y_true + 0.7 * rng.standard_normal((n, WIDTH))).astype(np.float32)
        out.append((y_true, y_pred, rng.uniform(0.0, 2.0, n).astype(np.float32)))
    return out


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(
    ("name", "options", "targets"),
    STANDALONE,
    ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(STANDALONE)],
)
def test_running_result_matches_keras(name, options, targets, weighted):
    ours = getattr(metrics, name)(**options)
    theirs = getattr(keras.metrics, name)(**options)
    for step, (y_true, y_pred, weights) in enumerate(batches(targets, seed=len(name))):
        ours.update_state(y_true, y_pred, weights if weighted else None)
        theirs.update_state(y_true, y_pred, weights if weighted else None)
        expected = numpy_of(theirs.result())
        got = ours.result()
        assert np.shape(got) == expected.shape, step
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6, err_msg=f"batch {step}")
    ours.reset_state()
    theirs.reset_state()
    with warnings.catch_warnings():  # the adjusted R2 of no samples warns in both
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_allclose(ours.result(), numpy_of(theirs.result()), atol=1e-7)


NEW_CLASSES = [
    "AUC",
    "Precision",
    "Recall",
    "F1Score",
    "FBetaScore",
    "R2Score",
    "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
]


@pytest.mark.parametrize("name", NEW_CLASSES)
def test_names_and_configs_are_keras_s(name):
    ours, theirs = getattr(metrics, name)(), getattr(keras.metrics, name)()
    # Keras numbers the default names of AUC, Precision and Recall per process (auc_1 ...)
    assert ours.name == re.sub(r"_\d+$", "", theirs.name)
    snake = keras.src.utils.naming.to_snake_case(name)
    for identifier in (name, snake):
        resolved = metrics.get(identifier)
        assert type(resolved).__name__ == type(keras.metrics.get(identifier)).__name__
        assert resolved.name == identifier  # compile names a metric as it was given
    config = ours.get_config()
    assert set(config) <= set(theirs.get_config())
    again = getattr(keras.metrics, name).from_config(config)
    assert again.get_config() == {**theirs.get_config(), "name": ours.name}
    assert metrics.deserialize(metrics.serialize(ours)).get_config() == config


def keras_weights(model):
    return [np.asarray(w.numpy()) for w in model.weights]


def both_models(outputs: int, activation: str, seed: int):
    """The same small MLP in Keras and densekit, from Keras's initial weights."""
    keras.utils.set_random_seed(seed)
    k_model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(outputs, activation=activation),
        ]
    )
    d_model = densekit.Sequential(
        [
            densekit.layers.Dense(6, activation="tanh", input_dim=4),
            densekit.layers.Dense(outputs, activation=activation),
        ]
    )
    d_model.build()
    d_model.set_weights(keras_weights(k_model))
    return k_model, d_model


def compile_both(k_model, d_model, loss, make_metrics, make_weighted):
    """Compile both with fresh metric objects from each library (``make_*(module)``)."""
    k_model.compile(
        optimizer=keras.optimizers.SGD(0.2),
        loss=loss,
        metrics=make_metrics(keras.metrics),
        weighted_metrics=make_weighted(keras.metrics),
    )
    d_model.compile(
        optimizer=optimizers.SGD(0.2),
        loss=loss,
        metrics=make_metrics(metrics),
        weighted_metrics=make_weighted(metrics),
    )


# name: outputs, activation, loss, targets, metrics, weighted metrics, class weights. The
# AUC, Precision and Recall objects are named: Keras numbers their default names per process.
TRAINING = {
    "binary": (
        1,
        "sigmoid",
        "binary_crossentropy",
        "binary",
        lambda m: ["auc", m.AUC(curve="PR", name="auc"), m.Precision(name="precision"), "recall"],
        lambda m: ["auc", "accuracy", m.Precision(thresholds=[0.3, 0.6], name="precision")],
        None,
    ),
    "categorical": (
        WIDTH,
        "softmax",
        "categorical_crossentropy",
        "one_hot",
        lambda m: [
            m.TopKCategoricalAccuracy(k=2),
            m.F1Score(average="macro"),
            m.AUC(multi_label=True, name="auc"),
            m.Precision(top_k=1, name="precision"),
            "f1_score",
        ],
        lambda m: [
            "categorical_accuracy",
            m.F1Score(average="weighted"),
            m.Recall(class_id=2, name="recall"),
        ],
        {0: 2.0, 1: 0.5},
    ),
    "sparse": (
        WIDTH,
        "softmax",
        "sparse_categorical_crossentropy",
        "labels",
        lambda m: ["accuracy", m.SparseTopKCategoricalAccuracy(k=2)],
        lambda m: ["accuracy", m.SparseTopKCategoricalAccuracy(k=2)],
        {2: 3.0},
    ),
    "regression": (
        WIDTH,
        None,
        "mse",
        "real",
        lambda m: [m.R2Score(), m.R2Score(class_aggregation=None), "mae"],
        lambda m: [m.R2Score(class_aggregation="variance_weighted_average"), "mae"],
        None,
    ),
}


def training_data(targets: str, outputs: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    score = x @ rng.standard_normal((4, WIDTH)) + 0.8 * rng.standard_normal((n, WIDTH))
    if targets == "binary":
        y = (score[:, :outputs] > 0).astype(np.float32)
    elif targets == "one_hot":
        y = np.eye(WIDTH, dtype=np.float32)[score.argmax(axis=1)]
    elif targets == "labels":
        y = score.argmax(axis=1)
    else:
        y = score.astype(np.float32)
    return x, y, rng.uniform(0.2, 2.0, n).astype(np.float32)


def one_epoch(logs: dict) -> dict:
    """evaluate's logs in History's form."""
    return {key: [value] for key, value in logs.items()}


def assert_logs_agree(got: dict, expected: dict, what: str):
    assert set(got) == set(expected), what
    for key, values in expected.items():
        np.testing.assert_allclose(
            np.asarray(got[key], np.float64),
            np.asarray([numpy_of(v) for v in values] if isinstance(values, list) else values),
            rtol=2e-5,
            atol=2e-6,
            err_msg=f"{what}: {key}",
        )


@pytest.mark.parametrize("case", sorted(TRAINING))
def test_training_history_matches_keras(case):
    outputs, activation, loss, targets, make_metrics, make_weighted, class_weight = TRAINING[case]
    k_model, d_model = both_models(outputs, activation or "linear", seed=len(case))
    compile_both(k_model, d_model, loss, make_metrics, make_weighted)
    x, y, weights = training_data(targets, outputs, 23, seed=1)  # batches of 5: 3 left over
    x_val, y_val, w_val = training_data(targets, outputs, 11, seed=2)
    options = {
        "batch_size": 5,
        "epochs": 3,
        "shuffle": False,
        "verbose": 0,
        # Keras takes class weights or sample weights, not both
        "sample_weight": weights if class_weight is None else None,
        "class_weight": class_weight,
        "validation_data": (x_val, y_val, w_val),
    }
    k_history = k_model.fit(x, y, **options).history
    d_history = d_model.fit(x, y, **options).history
    assert_logs_agree(d_history, k_history, "History")
    for got, expected in zip(d_model.get_weights(), keras_weights(k_model), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    k_logs = k_model.evaluate(x_val, y_val, sample_weight=w_val, verbose=0, return_dict=True)
    d_logs = d_model.evaluate(x_val, y_val, sample_weight=w_val, verbose=0, return_dict=True)
    assert_logs_agree(one_epoch(d_logs), one_epoch(k_logs), "evaluate")
    # the weighted metrics are unweighted where no weights come (as in Keras)
    k_logs = k_model.evaluate(x_val, y_val, verbose=0, return_dict=True)
    d_logs = d_model.evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert_logs_agree(one_epoch(d_logs), one_epoch(k_logs), "evaluate")


def test_metric_configs_cross_keras_files_both_ways(tmp_path):
    k_model, d_model = both_models(1, "sigmoid", seed=3)
    compile_both(
        k_model,
        d_model,
        "binary_crossentropy",
        lambda m: [
            m.AUC(curve="PR", num_thresholds=50, name="auc"),
            m.Precision(thresholds=[0.2, 0.7], name="precision"),
        ],
        lambda m: ["auc", m.F1Score(average="micro", threshold=0.4), m.R2Score()],
    )
    x, y, weights = training_data("binary", 1, 12, seed=4)
    path = tmp_path / "densekit.keras"
    d_model.save(path)
    loaded = keras.saving.load_model(path)
    k_logs = loaded.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    d_logs = d_model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert_logs_agree(one_epoch(d_logs), one_epoch(k_logs), "loaded by Keras")

    path = tmp_path / "keras.keras"
    k_model.save(path)
    again = densekit.load_model(path)
    assert again.metrics_names == d_model.metrics_names
    k_logs = k_model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    d_logs = again.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert_logs_agree(one_epoch(d_logs), one_epoch(k_logs), "loaded here")
