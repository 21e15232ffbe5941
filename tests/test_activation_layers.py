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
        # no fused activation: the relu_forward / relu_backward kernels
        (ReLU(max_value=5), None, None),
        (ReLU(max_value=6, negative_slope=0.1), None, None),
        (ReLU(threshold=0.5), None, None),
        (ReLU(negative_slope=0.1, threshold=1), None, None),
    ],
)
def test_layers_map_onto_kernels(layer, name, alpha):
    assert isinstance(layer, layers.Activation)
    if name is None:
        assert layer.activation is None
    else:
        assert layer.activation.name == name and layer.activation.alpha == alpha
    again = layers.deserialize(layers.serialize(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: ReLU(max_value=-1), ValueError, "max_value"),
        (lambda: ReLU(max_value=float("inf")), ValueError, "max_value"),
        (lambda: ReLU(threshold=-0.5), ValueError, "threshold"),
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
    "activation_layer",
    [
        ReLU(),
        ReLU(max_value=6),
        LeakyReLU(),
        ReLU(negative_slope=0.2),
        ReLU(max_value=2.5, negative_slope=0.2, threshold=0.5),
        ReLU(threshold=1.0),
    ],
)
def test_predict_matches_numpy_and_training_runs(activation_layer, tmp_path):
    model = small_model(activation_layer)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((33, 5)) * 3
    y = rng.integers(0, 4, 33)
    kernel1, bias1, kernel2, bias2 = model.get_weights()
    z = x @ kernel1 + bias1
    if isinstance(activation_layer, ReLU):  # Keras's formula, every parameter
        slope, threshold = activation_layer.negative_slope, activation_layer.threshold
        cap = np.inf if activation_layer.max_value is None else activation_layer.max_value
        h = np.where(z > threshold, np.minimum(z, cap), slope * (z - threshold))
    else:
        h = np.where(z > 0, z, activation_layer.negative_slope * z)
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
        (ReLU(threshold=0.5), keras.layers.ReLU(threshold=0.5, **f64)),
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


# Keras's ReLU arguments, the fused forms and the general kernel's
KERAS_RELU_ARGUMENTS = [
    {},
    {"max_value": 6.0},
    {"negative_slope": 0.1},
    {"max_value": 1.5},
    {"max_value": 6.0, "negative_slope": 0.1},
    {"threshold": 0.5},
    {"negative_slope": 0.3, "threshold": 0.4},
    {"max_value": 2.0, "negative_slope": 0.2, "threshold": 0.5},
    {"max_value": 0.25, "threshold": 0.5},
]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_forward_and_gradients_agree_with_keras(dtype):
    """Dense -> ReLU(...) -> Dense with the same weights: densekit's model against Keras's
    ReLU layer between torch products (Keras's float64 Dense multiplies in float32 on its
    torch backend): the outputs, the mse loss and its gradients (torch's autograd) agree."""
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras runs another backend")
    import torch

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((40, 6)) * 2).astype(dtype)
    y = rng.standard_normal((40, 3)).astype(dtype)
    start = [
        rng.standard_normal((6, 9)).astype(dtype),
        rng.standard_normal(9).astype(dtype) * 0.5,
        rng.standard_normal((9, 3)).astype(dtype) * 0.3,
        np.zeros(3, dtype),
    ]
    if dtype == "float64":
        tolerance = {"rtol": 1e-12, "atol": 1e-14}
    else:
        tolerance = {"rtol": 2e-5, "atol": 1e-6}
    for arguments in KERAS_RELU_ARGUMENTS:
        what = f"ReLU({arguments}) {dtype}"
        kernel1, bias1, kernel2, bias2 = (
            torch.from_numpy(w.copy()).requires_grad_() for w in start
        )
        relu = keras.layers.ReLU(**arguments, dtype=dtype)
        outputs = relu(torch.from_numpy(x) @ kernel1 + bias1) @ kernel2 + bias2
        kloss = torch.mean((outputs - torch.from_numpy(y)) ** 2)
        kloss.backward()

        model = densekit.Sequential(
            [Input((6,)), Dense(9), ReLU(**arguments), Dense(3)], dtype=dtype
        )
        model.set_weights(start)
        model.compile(optimizer="sgd", loss="mse")
        np.testing.assert_allclose(
            model.predict(x), outputs.detach().numpy(), **tolerance, err_msg=what
        )
        loss, gradients = model.training_state.batch_gradients(x, y)
        np.testing.assert_allclose(loss, kloss.item(), **tolerance, err_msg=what)
        for i, (ours, weight) in enumerate(zip(gradients, (kernel1, bias1, kernel2, bias2))):
            np.testing.assert_allclose(
                ours, weight.grad.numpy(), **tolerance, err_msg=f"{what} gradient {i}"
            )


def test_general_relu_runs_on_its_own_and_saves(tmp_path):
    """The general form is an op of its own between Dense layers (no fusion), in training,
    evaluate, predict (one batch and several) and both file formats."""
    pytest.importorskip("h5py")
    layer = ReLU(max_value=2.0, negative_slope=0.2, threshold=0.5)
    model = small_model(layer)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 5))
    y = rng.integers(0, 4, 70)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    whole = model.predict(x, batch_size=100)
    np.testing.assert_array_equal(model.predict(x, batch_size=16), whole)
    for name in ("model.npz", "model.keras"):
        model.save(tmp_path / name)
        loaded = densekit.load_model(tmp_path / name)
        assert loaded.layers[1].get_config() == layer.get_config()
        assert loaded.layers[1].activation is None
        np.testing.assert_array_equal(loaded.predict(x), whole)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_general_relu_crosses_over_in_keras_files(tmp_path):
    pytest.importorskip("h5py")
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras runs another backend")
    arguments = {"max_value": 2.0, "negative_slope": 0.2, "threshold": 0.5}
    x = np.random.default_rng(3).standard_normal((20, 5)).astype("float32")
    theirs = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(7), keras.layers.ReLU(**arguments)]
    )
    theirs.save(tmp_path / "keras.keras")
    ours = densekit.load_model(tmp_path / "keras.keras")
    assert ours.layers[1].get_config() | {"name": None} == ReLU(**arguments).get_config() | {
        "name": None
    }
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x, verbose=0), 1e-6, 1e-6)
    ours.save(tmp_path / "densekit.keras")
    again = keras.saving.load_model(tmp_path / "densekit.keras")
    assert again.layers[1].get_config()["threshold"] == 0.5
    np.testing.assert_allclose(again.predict(x, verbose=0), ours.predict(x), 1e-6, 1e-6)
