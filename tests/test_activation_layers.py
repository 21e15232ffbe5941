"""Keras's activation layers (ReLU, Softmax, LeakyReLU): the kernels they map onto, their
arguments checked like Keras's, training through them, saving, and Keras itself as the oracle."""

from __future__ import annotations

import os

import numpy as np
import pytest

import densekit
from densekit import layers
from densekit.layers import Dense, Input, LeakyReLU, ReLU, Softmax


@pytest.mark.parametrize(
    ("layer", "name", "alpha"),
    [
        (ReLU(), "relu", None),
        (ReLU(max_value=6), "relu6", None),
        (ReLU(negative_slope=0.1), "leaky_relu", 0.1),
        (LeakyReLU(), "leaky_relu", 0.3),
        (LeakyReLU(negative_slope=0.05), "leaky_relu", 0.05),
        (LeakyReLU(alpha=0.2), "leaky_relu", 0.2),
        (LeakyReLU(negative_slope=0), "relu", None),
        (Softmax(), "softmax", None),
        (Softmax(axis=1), "softmax", None),
    ],
)
def test_layers_map_onto_kernels(layer, name, alpha):
    assert isinstance(layer, layers.Activation)
    assert layer.activation.name == name and layer.activation.alpha == alpha
    again = layers.deserialize(layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: ReLU(max_value=-1), ValueError, "max_value"),
        (lambda: ReLU(max_value=5), ValueError, "max_value"),
        (lambda: ReLU(max_value=6, negative_slope=0.1), ValueError, "max_value"),
        (lambda: ReLU(threshold=0.5), ValueError, "threshold"),
        (lambda: ReLU(negative_slope=-0.1), ValueError, "negative_slope"),
        (lambda: ReLU(negative_slope="x"), TypeError, "negative_slope"),
        (lambda: LeakyReLU(negative_slope=float("nan")), ValueError, "negative_slope"),
        (lambda: LeakyReLU(negative_slope=None), TypeError, "negative_slope"),
        (lambda: Softmax(axis=0), ValueError, "axis"),
        (lambda: Softmax(axis=True), ValueError, "axis"),
    ],
)
def test_arguments_are_checked(make, error, argument):
    with pytest.raises(error, match=argument):
        make()


def small_model(activation_layer, seed=3):
    densekit.set_random_seed(seed)
    return densekit.Sequential(
        [Input((5,)), Dense(7), activation_layer, Dense(4), Softmax()], dtype="float64"
    )


@pytest.mark.parametrize(
    "activation_layer", [ReLU(), ReLU(max_value=6), LeakyReLU(), ReLU(negative_slope=0.2)]
)
def test_predict_matches_numpy_and_training_runs(activation_layer, tmp_path):
    model = small_model(activation_layer)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((33, 5)) * 3
    y = rng.integers(0, 4, 33)
    kernel1, bias1, kernel2, bias2 = model.get_weights()
    z = x @ kernel1 + bias1
    name, alpha = activation_layer.activation
    if name == "relu":
        h = np.maximum(z, 0)
    elif name == "relu6":
        h = np.minimum(np.maximum(z, 0), 6)
    else:
        h = np.where(z > 0, z, alpha * z)
    logits = h @ kernel2 + bias2
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(model.predict(x, verbose=0), e / e.sum(1, keepdims=True), 1e-12)
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_layers_agree_with_keras():
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras runs another backend")
    import torch

    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 11)) * 5
    f64 = {"dtype": "float64"}
    pairs = [
        (ReLU(), keras.layers.ReLU(**f64)),
        (ReLU(max_value=6), keras.layers.ReLU(max_value=6, **f64)),
        (ReLU(negative_slope=0.1), keras.layers.ReLU(negative_slope=0.1, **f64)),
        (LeakyReLU(), keras.layers.LeakyReLU(**f64)),
        (LeakyReLU(negative_slope=0.01), keras.layers.LeakyReLU(negative_slope=0.01, **f64)),
        (Softmax(), keras.layers.Softmax(**f64)),
    ]
    for ours, theirs in pairs:
        model = densekit.Sequential([Input((11,)), ours], dtype="float64")
        want = theirs(torch.from_numpy(x.copy())).detach().numpy()
        np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-12, atol=1e-15)
        config = theirs.get_config()
        keys = set(ours.get_config()) - {"name", "dtype", "input_shape"}
        assert {key: config[key] for key in keys} == {key: ours.get_config()[key] for key in keys}
