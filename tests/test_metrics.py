"""densekit's metrics in the model layer: weighted_metrics and the logs' names, metrics on
the probabilities of an absorbed softmax, states that add up (what Hogwild! workers and MPI
ranks rely on), saving, array results in the logs, and the standalone API's checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import densekit
from densekit import callbacks, layers, metrics

# every class with a state beyond a total and a count, with arguments and targets
STATEFUL = [
    (metrics.AUC, {"num_thresholds": 9}, "binary"),
    (metrics.AUC, {"multi_label": True, "curve": "PR"}, "binary"),
    (metrics.Precision, {"thresholds": [0.6, 0.3]}, "binary"),
    (metrics.Recall, {"top_k": 2}, "binary"),
    (metrics.F1Score, {}, "one_hot"),
    (metrics.FBetaScore, {"average": "micro", "beta": 0.5}, "binary"),
    (metrics.R2Score, {}, "real"),
    (metrics.TopKCategoricalAccuracy, {"k": 2}, "one_hot"),
    (metrics.SparseTopKCategoricalAccuracy, {"k": 2}, "labels"),
    (metrics.BinaryAccuracy, {}, "binary"),
]


def batch(rng, targets: str, n: int, width: int = 3):
    y_pred = rng.random((n, width))
    if targets == "binary":
        y_true = (rng.random((n, width)) > 0.5).astype(float)
    elif targets == "one_hot":
        y_true = np.eye(width)[rng.integers(0, width, n)]
    elif targets == "labels":
        y_true = rng.integers(0, width, n)
    else:
        y_true = y_pred + rng.standard_normal((n, width))
    return y_true, y_pred, rng.uniform(0.0, 2.0, n)


@pytest.mark.parametrize(("cls", "options", "targets"), STATEFUL)
def test_states_of_disjoint_batches_add_up(cls, options, targets):
    rng = np.random.default_rng(0)
    first, second = batch(rng, targets, 6), batch(rng, targets, 5)
    one, other, both = cls(**options), cls(**options), cls(**options)
    one.update_state(*first)
    other.update_state(*second)
    both.update_state(*first)
    both.update_state(*second)
    merged = copy.copy(one)
    assert merged.state is not one.state  # a copy has a state of its own
    merged.state += other.state
    np.testing.assert_allclose(merged.state, both.state, rtol=1e-12)
    np.testing.assert_allclose(merged.result(), both.result(), rtol=1e-12)
    one.reset_state()
    assert one.state.shape == both.state.shape and not one.state.any()


def test_log_names_follow_keras():
    names = ["acc", "acc", "auc", "acc", "acc", "auc", "mae"]
    weighted = [False, False, False, True, True, True, True]
    assert metrics.log_names(names, weighted) == [
        "acc",
        "acc_1",
        "auc",
        "weighted_acc",
        "weighted_acc_1",
        "weighted_auc",
        "mae",
    ]


def binary_model(seed=0):
    densekit.set_random_seed(seed)
    return densekit.Sequential(
        [layers.Input((4,)), layers.Dense(5, "tanh"), layers.Dense(1, "sigmoid")]
    )


def binary_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    y = (x[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(float)
    return x, y, rng.uniform(0.1, 2.0, n)


def test_weighted_metrics_see_the_sample_and_class_weights():
    x, y, w = binary_data()
    model = binary_model()
    model.compile(
        "sgd",
        "binary_crossentropy",
        metrics=["accuracy", metrics.AUC(name="auc")],
        weighted_metrics=["accuracy", metrics.AUC(name="auc"), metrics.Precision()],
    )
    assert model.metrics_names == [
        "loss",
        "accuracy",
        "auc",
        "weighted_accuracy",
        "weighted_auc",
        "precision",
    ]
    logs = model.evaluate(x, y, sample_weight=w, batch_size=7, return_dict=True, verbose=0)
    p = model.predict(x, verbose=0)
    for key, cls, weights in [
        ("accuracy", metrics.BinaryAccuracy, None),
        ("auc", metrics.AUC, None),
        ("weighted_accuracy", metrics.BinaryAccuracy, w),
        ("weighted_auc", metrics.AUC, w),
        ("precision", metrics.Precision, w),
    ]:
        expected = cls()
        expected.update_state(y, p, weights)
        assert logs[key] == pytest.approx(expected.result(), rel=1e-12), key
    assert logs["weighted_accuracy"] != pytest.approx(logs["accuracy"])
    # without weights, the weighted metrics are the plain ones (as in Keras)
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["weighted_accuracy"] == pytest.approx(logs["accuracy"], rel=1e-12)
    assert logs["weighted_auc"] == pytest.approx(logs["auc"], rel=1e-12)
    # class weights fold into the weights the weighted metrics see during fit
    history = model.fit(x, y, batch_size=40, epochs=1, class_weight={0: 3.0}, verbose=0)
    weights = np.where(y == 0, 3.0, 1.0)
    expected = metrics.BinaryAccuracy()
    expected.update_state(y, p, weights)
    assert history.history["weighted_accuracy"][0] == pytest.approx(expected.result())


def test_metrics_of_an_absorbed_softmax_see_probabilities():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 5))
    y = np.eye(3)[rng.integers(0, 3, 30)]
    densekit.set_random_seed(3)
    model = densekit.Sequential(
        [layers.Input((5,)), layers.Dense(8, "relu"), layers.Dense(3, "softmax")]
    )
    chosen = [
        metrics.AUC(multi_label=True, name="auc"),
        metrics.Precision(thresholds=0.4, name="precision"),
        metrics.F1Score(threshold=0.3),
        metrics.TopKCategoricalAccuracy(k=2),
        metrics.R2Score(),
    ]
    model.compile("adam", "categorical_crossentropy", metrics=chosen)
    logs = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    p = model.predict(x, verbose=0)
    for metric in chosen:
        expected = type(metric)(**metric.get_config())
        expected.update_state(y, p)
        np.testing.assert_allclose(logs[metric.name], expected.result(), rtol=1e-12)


def test_compile_settings_with_weighted_metrics_round_trip(tmp_path):
    x, y, w = binary_data()
    model = binary_model()
    model.compile(
        "adam",
        "binary_crossentropy",
        metrics=[metrics.AUC(curve="PR", thresholds=[0.7, 0.2]), "recall"],
        weighted_metrics=["auc", metrics.F1Score(average="macro"), metrics.R2Score()],
    )
    model.fit(x, y, sample_weight=w, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    assert loaded.get_compile_config() == model.get_compile_config()
    assert loaded.metrics_names == model.metrics_names
    assert loaded.evaluate(x, y, sample_weight=w, verbose=0) == model.evaluate(
        x, y, sample_weight=w, verbose=0
    )
    plain = binary_model()
    plain.compile("adam", "binary_crossentropy", metrics=["auc"])
    assert "weighted_metrics" not in plain.get_compile_config()  # files stay as they were


def test_array_results_reach_history_and_progress_lines(capsys):
    x, y, _ = binary_data()
    onehot = np.stack([1 - y, y], axis=1)
    densekit.set_random_seed(4)
    model = densekit.Sequential([layers.Input((4,)), layers.Dense(2, "softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=[metrics.F1Score(), "f1_score"])
    history = model.fit(x, onehot, batch_size=16, epochs=2, verbose=2)
    assert np.shape(history.history["f1_score"][-1]) == (2,)
    assert np.shape(history.history["f1_score_1"][-1]) == (2,)
    assert "f1_score: [" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [("val_auc_1", "max"), ("precision", "max"), ("val_f1_score", "max"), ("val_mae", "min")],
)
def test_early_stopping_knows_which_way_the_new_metrics_improve(monitor, mode):
    assert callbacks.EarlyStopping(monitor=monitor).mode == mode


def test_a_metric_for_other_targets_is_refused_naming_its_list():
    model = densekit.Sequential([layers.Input((4,)), layers.Dense(3, "softmax")])
    model.compile(
        "adam",
        "sparse_categorical_crossentropy",
        weighted_metrics=["top_k_categorical_accuracy"],
    )
    with pytest.raises(ValueError, match="weighted_metrics: 'top_k_categorical_accuracy' needs"):
        model.evaluate(np.zeros((2, 4)), np.array([0, 1]), verbose=0)


def test_standalone_checks():
    auc = metrics.AUC()
    auc.update_state([[1.0, 0.0]], [[0.9, 0.2]])
    f1 = metrics.F1Score()
    f1.update_state(np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match="y_pred: expected 2 outputs"):
        f1.update_state(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="sample_weight: expected a number or one weight"):
        auc.update_state([[1.0, 0.0]], [[0.9, 0.2]], sample_weight=[[1.0, 2.0]])
    auc.update_state([[1.0, 0.0]], [[0.9, 0.2]], sample_weight=[[2.0]])
    auc.update_state([[1.0, 0.0]], [[0.9, 0.2]], sample_weight=0.5)
    with pytest.raises(ValueError, match="class_id: expected a class in"):
        metrics.Precision(class_id=3).update_state(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="label_weights: expected one weight per output"):
        metrics.AUC(label_weights=[1.0]).update_state(np.eye(2), np.eye(2))
    bad = [
        (lambda: metrics.Precision(thresholds=[0.5, 1.5]), "thresholds"),
        (lambda: metrics.Recall(top_k=0), "k"),
        (lambda: metrics.Recall(class_id=-1), "class_id"),
        (lambda: metrics.AUC(curve="XY"), "curve"),
        (lambda: metrics.AUC(summation_method="left"), "summation_method"),
        (lambda: metrics.AUC(num_thresholds=1), "num_thresholds"),
        (lambda: metrics.AUC(num_labels=3), "num_labels"),
        (lambda: metrics.F1Score(average="mean"), "average"),
        (lambda: metrics.F1Score(threshold=0.0), "threshold"),
        (lambda: metrics.FBetaScore(beta=0), "beta"),
        (lambda: metrics.R2Score(class_aggregation="median"), "class_aggregation"),
        (lambda: metrics.R2Score(num_regressors=-1), "num_regressors"),
        (lambda: metrics.TopKCategoricalAccuracy(k=0), "k"),
    ]
    for make, argument in bad:
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value).startswith(argument + ":"), str(info.value)
