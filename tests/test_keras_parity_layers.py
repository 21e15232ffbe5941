"""The normalization and noise layers against Keras 3 itself (torch backend): the same model,
initial weights, data and batches (shuffle=False, a partial last batch, SGD) trains to the same
History, weights (moving statistics included), evaluate and predict, to float32 precision.
GaussianNoise draws from another random stream than Keras's: it is compared in inference and
by the statistics of its training noise."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was chosen first
    pytest.skip("the parity tests run Keras on its torch backend", allow_module_level=True)

import densekit  # noqa: E402
from densekit import layers  # noqa: E402

# Keras 3 on NumPy 2 warns about its own Variable.__array__
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

N, FEATURES, BATCH, EPOCHS = 103, 7, 16, 3  # 103 = 6 * 16 + 7: a partial last batch


def data():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(N, FEATURES)) * [1, 2, 3, 0.5, 1, 4, 1] + [0, 1, -2, 3, 0, 5, 1]).astype(
        "float32"
    )
    y = np.tanh(x @ rng.normal(size=(FEATURES, 2))).astype("float32")
    return x, y


def build_pair(kind: str, x, seed: int = 1):
    """The same architecture in Keras and densekit, with ``kind`` between the Dense layers."""
    k, d = keras.layers, layers
    if kind == "batch_norm":
        kl = [k.Dense(16, "relu"), k.BatchNormalization(), k.Dense(8, "tanh"), k.Dense(2)]
        dl = [d.Dense(16, "relu"), d.BatchNormalization(), d.Dense(8, "tanh"), d.Dense(2)]
    elif kind == "batch_norm_plain":
        kl = [
            k.Dense(16),
            k.BatchNormalization(center=False, scale=False, momentum=0.9),
            k.Activation("relu"),
            k.Dense(2),
        ]
        dl = [
            d.Dense(16),
            d.BatchNormalization(center=False, scale=False, momentum=0.9),
            d.Activation("relu"),
            d.Dense(2),
        ]
    elif kind == "layer_norm":
        kl = [k.Dense(16, "relu"), k.LayerNormalization(), k.Dense(2)]
        dl = [d.Dense(16, "relu"), d.LayerNormalization(), d.Dense(2)]
    elif kind == "normalization":
        kn, dn = k.Normalization(), d.Normalization()
        kn.adapt(x)
        dn.adapt(x)
        kl = [kn, k.Dense(16, "relu"), k.Flatten(), k.Dense(2)]
        dl = [dn, d.Dense(16, "relu"), d.Flatten(), d.Dense(2)]
    elif kind == "gaussian_noise":
        kl = [k.Dense(16, "relu"), k.GaussianNoise(0.3, seed=3), k.Dense(2)]
        dl = [d.Dense(16, "relu"), d.GaussianNoise(0.3, seed=3), d.Dense(2)]
    else:
        raise AssertionError(kind)
    kmodel = keras.Sequential([keras.Input((FEATURES,)), *kl])
    dmodel = densekit.Sequential([layers.Input((FEATURES,)), *dl])
    # initial weights from NumPy (Keras's own draws vary between processes): kernels random,
    # the rest (biases, gamma, beta, statistics) as the layers made them
    rng = np.random.default_rng(seed)
    start = [
        (rng.normal(size=w.shape) / np.sqrt(w.shape[0])).astype("float32") if w.ndim == 2 else w
        for w in kmodel.get_weights()
    ]
    kmodel.set_weights(start)
    dmodel.set_weights(start)
    for model, module in ((kmodel, keras), (dmodel, densekit)):
        model.compile(optimizer=module.optimizers.SGD(learning_rate=0.05), loss="mse")
    return kmodel, dmodel


def close(a, b, what):
    np.testing.assert_allclose(
        np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-5, atol=2e-6, err_msg=what
    )


@pytest.mark.parametrize("kind", ["batch_norm", "batch_norm_plain", "layer_norm", "normalization"])
def test_training_matches_keras(kind):
    x, y = data()
    kmodel, dmodel = build_pair(kind, x)
    assert [w.shape for w in dmodel.get_weights()] == [w.shape for w in kmodel.get_weights()]
    fit = {"batch_size": BATCH, "epochs": EPOCHS, "shuffle": False, "verbose": 0}
    khist = kmodel.fit(x, y, **fit).history
    dhist = dmodel.fit(x, y, **fit).history
    close(dhist["loss"], khist["loss"], "History loss")
    for i, (dw, kw) in enumerate(zip(dmodel.get_weights(), kmodel.get_weights())):
        close(dw, kw, f"weight {i}")
    close(dmodel.evaluate(x, y, verbose=0), kmodel.evaluate(x, y, verbose=0), "evaluate")
    close(dmodel.predict(x), kmodel.predict(x, verbose=0), "predict")


def test_batch_norm_moving_statistics_change_and_are_not_trained():
    x, y = data()
    kmodel, dmodel = build_pair("batch_norm", x)
    bn = dmodel.layers[1]
    assert [w.shape for w in bn.non_trainable_weights] == [(16,), (16,)]
    assert [w.shape for w in bn.trainable_weights] == [(16,), (16,)]
    dmodel.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    kmodel.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    kbn = kmodel.layers[1]
    close(bn.moving_mean, kbn.moving_mean.numpy(), "moving_mean")
    close(bn.moving_variance, kbn.moving_variance.numpy(), "moving_variance")
    assert not np.allclose(bn.moving_variance, 1.0)
    # the optimizer's state covers the trainable weights only
    size = sum(w.size for w in dmodel.weights) - 2 * 16
    state = densekit.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    dmodel.compile(optimizer=state, loss="mse")
    dmodel.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert state.variables["velocity"].shape == (size,)


def test_gaussian_noise_inference_matches_keras_and_training_noise_has_its_stddev():
    x, y = data()
    kmodel, dmodel = build_pair("gaussian_noise", x)
    close(dmodel.evaluate(x, y, verbose=0), kmodel.evaluate(x, y, verbose=0), "evaluate")
    close(dmodel.predict(x), kmodel.predict(x, verbose=0), "predict")
    # training noise: with an identity kernel and the inputs as targets, the mse is the mean
    # squared noise; both frameworks draw stddev**2 within sampling error
    stddev, rows, width = 0.5, 400, 50
    inputs = np.random.default_rng(2).normal(size=(rows, width)).astype("float32")
    losses = []
    for module in (keras, densekit):
        model = module.Sequential(
            [
                module.layers.Input((width,)),
                module.layers.GaussianNoise(stddev, seed=7),
                module.layers.Dense(width, use_bias=False),
            ]
        )
        model.set_weights([np.eye(width, dtype="float32")])
        model.compile(optimizer=module.optimizers.SGD(learning_rate=0.0), loss="mse")
        losses.append(float(model.train_on_batch(inputs, inputs)))
    for loss in losses:
        assert abs(loss / stddev**2 - 1) < 0.05  # 20000 draws: the standard error is ~1%
    # reproducible from the seed, different for another seed
    again = []
    for seed in (7, 7, 8):
        model = densekit.Sequential(
            [
                layers.Input((width,)),
                layers.GaussianNoise(stddev, seed=seed),
                layers.Dense(width, use_bias=False),
            ]
        )
        model.set_weights([np.eye(width, dtype="float32")])
        model.compile(optimizer=densekit.optimizers.SGD(learning_rate=0.0), loss="mse")
        again.append(float(model.train_on_batch(inputs, inputs)))
    assert again[0] == again[1] != again[2]


def samples_with_axes(kind: str):
    """Data and the same model in Keras and densekit on samples of several axes."""
    rng = np.random.default_rng(7)
    shape = (2, 3, 4) if kind == "channels_first" else (4, 5)
    x = rng.normal(size=(N, *shape)).astype("float32")
    y = np.tanh(x.reshape(N, -1) @ rng.normal(size=(x[0].size, 2)) / 3).astype("float32")
    k, d = keras.layers, layers
    if kind == "flatten":
        kl = [k.Flatten(), k.Dense(8, "relu"), k.Dense(2)]
        dl = [d.Flatten(), d.Dense(8, "relu"), d.Dense(2)]
    elif kind == "last_axis":
        kl = [k.Dense(6, "tanh"), k.BatchNormalization(), k.LayerNormalization(), k.Flatten()]
        dl = [d.Dense(6, "tanh"), d.BatchNormalization(), d.LayerNormalization(), d.Flatten()]
        kl.append(k.Dense(2))
        dl.append(d.Dense(2))
    elif kind == "normalization":
        kn, dn = k.Normalization(), d.Normalization()
        kn.adapt(x)
        dn.adapt(x)
        kl = [kn, k.Dense(3), k.ReLU(max_value=1.0, threshold=0.1), k.Flatten(), k.Dense(2)]
        dl = [dn, d.Dense(3), d.ReLU(max_value=1.0, threshold=0.1), d.Flatten(), d.Dense(2)]
    elif kind == "channels_first":
        kl = [k.Flatten(data_format="channels_first"), k.Dense(2)]
        dl = [d.Flatten(data_format="channels_first"), d.Dense(2)]
    else:
        raise AssertionError(kind)
    kmodel = keras.Sequential([keras.Input(shape), *kl])
    dmodel = densekit.Sequential([layers.Input(shape), *dl])
    rng = np.random.default_rng(1)
    start = [
        (rng.normal(size=w.shape) / np.sqrt(w.shape[0])).astype("float32") if w.ndim == 2 else w
        for w in kmodel.get_weights()
    ]
    kmodel.set_weights(start)
    dmodel.set_weights(start)
    for model, module in ((kmodel, keras), (dmodel, densekit)):
        model.compile(optimizer=module.optimizers.SGD(learning_rate=0.05), loss="mse")
    return x, y, kmodel, dmodel


@pytest.mark.parametrize("kind", ["flatten", "last_axis", "normalization", "channels_first"])
def test_samples_with_axes_train_as_in_keras(kind):
    """Input((4, 5)): Keras's layers act on the last axis until Flatten; densekit's train to
    the same History, weights, evaluate and predict, and its summary has Keras's shapes."""
    x, y, kmodel, dmodel = samples_with_axes(kind)
    assert [(None, *layer.output_sample_shape) for layer in dmodel.layers] == [
        tuple(layer.output.shape) for layer in kmodel.layers
    ]
    fit = {"batch_size": BATCH, "epochs": 2, "shuffle": False, "verbose": 0}
    khist = kmodel.fit(x, y, **fit).history
    dhist = dmodel.fit(x, y, **fit).history
    close(dhist["loss"], khist["loss"], "History loss")
    for i, (dw, kw) in enumerate(zip(dmodel.get_weights(), kmodel.get_weights())):
        close(dw, kw, f"weight {i}")
    close(dmodel.evaluate(x, y, verbose=0), kmodel.evaluate(x, y, verbose=0), "evaluate")
    close(dmodel.predict(x), kmodel.predict(x, verbose=0), "predict")
