"""Models of samples with several axes: Input((a, b, ...)), layers on the last axis, Flatten
(a view of C-contiguous inputs), and what follows from them: fit, evaluate, predict, files,
summary shapes and the errors that name what does not fit. Keras itself is the oracle in
tests/test_keras_parity_layers.py and tests/test_keras_files.py."""

from __future__ import annotations

import numpy as np
import pytest

import densekit
from densekit import data, layers, training


def images(n=29, shape=(3, 4), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(dtype), rng.integers(0, 3, n)


def last_axis_model(dtype="float64", **dense):
    """Dense and ReLU on the last axis of (3, 4) samples, then Flatten and a classifier."""
    densekit.set_random_seed(4)
    return densekit.Sequential(
        [
            layers.Input((3, 4)),
            layers.Dense(5, "tanh", **dense),
            layers.ReLU(max_value=0.6, negative_slope=0.1, threshold=0.05),
            layers.Flatten(),
            layers.Dense(3, "softmax"),
        ],
        dtype=dtype,
    )


def reference_forward(model, x):
    """The model's outputs in float64 NumPy: the layers on the last axis, then flat."""
    kernel1, bias1, kernel2, bias2 = (w.astype(np.float64) for w in model.get_weights())
    h = np.tanh(x @ kernel1 + bias1)  # (n, 3, 5): each row of the last axis
    h = np.where(h > 0.05, np.minimum(h, 0.6), 0.1 * (h - 0.05))
    logits = h.reshape(len(x), -1) @ kernel2 + bias2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_flatten_is_a_view_of_c_contiguous_inputs():
    model = densekit.Sequential([layers.Input((3, 4)), layers.Flatten(), layers.Dense(2)])
    x, _ = images(dtype=np.float32)
    flat = training.inputs_for(model, x)
    assert flat.shape == (29, 12) and np.shares_memory(flat, x)
    strided = np.asarray(x[:, ::-1])  # not C-contiguous: converted once
    np.testing.assert_array_equal(training.inputs_for(model, strided), strided.reshape(29, 12))
    assert model.layers[0].output_sample_shape == (12,)


def test_layers_act_on_the_last_axis_as_numpy_says():
    model = last_axis_model()
    x, _ = images()
    np.testing.assert_allclose(model.predict(x), reference_forward(model, x), rtol=1e-12)
    # several batches (a partial one) and one batch give the same bits
    np.testing.assert_array_equal(model.predict(x, batch_size=7), model.predict(x, batch_size=64))
    assert model.predict(x[:1]).shape == (1, 3)


def test_gradients_on_the_last_axis_match_finite_differences():
    model = last_axis_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = images(n=11)
    _, gradients = model.training_state.batch_gradients(x, y)
    h = 1e-6
    for weight, gradient in zip(model.weights, gradients):
        for index in [(0,) * weight.ndim, tuple(s - 1 for s in weight.shape)]:
            saved = weight[index]
            weight[index] = saved + h
            plus = model.evaluate(x, y, verbose=0)
            weight[index] = saved - h
            minus = model.evaluate(x, y, verbose=0)
            weight[index] = saved
            np.testing.assert_allclose(gradient[index], (plus - minus) / (2 * h), rtol=1e-5)


def test_fit_evaluate_predict_and_files(tmp_path):
    model = last_axis_model(dtype="float32")
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    x, y = images(dtype=np.float32)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_split=0.2)
    assert np.isfinite(history.history["val_loss"]).all()
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1
    assert model.input_shape == (None, 3, 4) and model.output_shape == (None, 3)
    model.save(tmp_path / "m.npz")
    loaded = densekit.load_model(tmp_path / "m.npz")
    assert loaded.input_shape == (None, 3, 4)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # training goes on from the file as it would have
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.save_weights(tmp_path / "w.npz")
    fresh = last_axis_model(dtype="float32")
    fresh.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))
    unbuilt = densekit.Sequential([layers.Dense(5), layers.Flatten(), layers.Dense(3)])
    unbuilt.load_weights(tmp_path / "m.npz")  # a model file holds the input shape
    assert unbuilt.input_shape == (None, 3, 4)
    clone = densekit.models.clone_model(model)
    assert clone.input_shape == (None, 3, 4)
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def test_a_model_built_from_its_first_inputs_and_from_batches():
    x, y = images(dtype=np.float32)
    densekit.set_random_seed(2)
    model = densekit.Sequential([layers.Dense(4), layers.Flatten(), layers.Dense(3, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert model.input_shape == (None, 3, 4) and model.output_shape == (None, 3)
    dataset = data.Dataset.from_tensor_slices((x, y)).batch(8)
    streamed = densekit.Sequential([layers.Dense(4), layers.Flatten(), layers.Dense(3, "softmax")])
    streamed.compile("sgd", "sparse_categorical_crossentropy")
    streamed.fit(dataset, epochs=1, verbose=0)  # built from the Dataset's samples
    assert streamed.input_shape == (None, 3, 4)
    streamed.set_weights(model.get_weights())
    streamed.fit(dataset, epochs=2, verbose=0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(streamed.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_channels_first_flatten_moves_the_channels_last():
    densekit.set_random_seed(3)
    model = densekit.Sequential(
        [layers.Input((2, 3, 4)), layers.Flatten(data_format="channels_first"), layers.Dense(2)],
        dtype="float64",
    )
    x, _ = images(n=5, shape=(2, 3, 4))
    kernel, bias = model.get_weights()
    expected = np.moveaxis(x, 1, -1).reshape(5, -1) @ kernel + bias
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12)
    model.compile("sgd", "mse")
    target = np.zeros((5, 2))
    _, (dkernel, _) = model.training_state.batch_gradients(x, target)
    np.testing.assert_allclose(
        dkernel, np.moveaxis(x, 1, -1).reshape(5, -1).T @ (2 * expected / 10), rtol=1e-12
    )


def test_normalization_adapts_over_every_axis_but_the_last():
    x, _ = images()
    norm = layers.Normalization()
    norm.adapt(x)
    flat = layers.Normalization()
    flat.adapt(x.reshape(-1, 4))
    np.testing.assert_array_equal(norm._adapted[0], flat._adapted[0])
    model = densekit.Sequential([layers.Input((3, 4)), norm, layers.Flatten()], dtype="float64")
    mean, variance = x.reshape(-1, 4).mean(0), x.reshape(-1, 4).var(0)
    expected = ((x - mean) / np.sqrt(variance)).reshape(29, 12)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-12, atol=1e-12)


def test_summary_shows_each_layers_output_shape():
    lines = []
    last_axis_model().summary(print_fn=lines.append)
    text = "\n".join(lines)
    for shape in ("(None, 3, 5)", "(None, 15)", "(None, 3)"):
        assert shape in text, shape


@pytest.mark.parametrize(
    ("make", "call", "match"),
    [
        (
            lambda: last_axis_model(),
            lambda model: model.predict(np.zeros((2, 12))),
            r"x: expected a 3-D array \(samples, 3, 4\), got shape \(2, 12\)",
        ),
        (
            lambda: last_axis_model(),
            lambda model: model.predict(np.zeros((2, 4, 3))),
            r"x: expected shape \(n, 3, 4\), got \(2, 4, 3\)",
        ),
        (
            lambda: densekit.Sequential(
                [layers.Input((3, 4)), layers.BatchNormalization(axis=1), layers.Flatten()]
            ),
            None,
            "axis: layer .* axis=1",
        ),
        (
            lambda: densekit.Sequential([layers.Input((3, 4)), layers.Softmax(axis=1)]),
            None,
            "axis: layer .* axis=1",
        ),
        (
            lambda: densekit.Sequential([layers.Input((3, 4)), layers.Dense(2)]),
            lambda model: (
                model.compile("sgd", "mse")
                or model.fit(np.zeros((2, 3, 4)), np.zeros((2, 3, 2)), verbose=0)
            ),
            r"outputs are \(None, 3, 2\).*Flatten",
        ),
        (
            lambda: densekit.Sequential(
                [layers.Input((3, 4)), layers.Dense(2, "softmax"), layers.Flatten()]
            ),
            lambda model: (
                model.compile("sgd", "categorical_crossentropy")
                or model.fit(np.zeros((2, 3, 4)), np.zeros((2, 6)), verbose=0)
            ),
            "loss: it takes the softmax over each sample's outputs",
        ),
    ],
    ids=[
        "flat-inputs",
        "other-extents",
        "batch-norm-axis-1",
        "softmax-axis-1",
        "output-axes",
        "softmax-before-flatten",
    ],
)
def test_what_does_not_fit_is_a_clear_value_error(make, call, match):
    with pytest.raises(ValueError, match=match):
        model = make()
        call(model)
