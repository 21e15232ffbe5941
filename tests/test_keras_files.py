"""Keras 3 ``.keras`` files both ways: files built by Keras itself load in densekit and predict
the same, densekit's files load in Keras and predict the same, configs and optimizer state
cross over, unsupported models and names are clear errors, and hostile files are refused
with bounded reads."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
import warnings
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import densekit
from densekit import (
    _keras_format,
    constraints,
    initializers,
    layers,
    optimizers,
    regularizers,
    saving,
    schedules,
)

h5py = pytest.importorskip("h5py")
keras = pytest.importorskip("keras")

# Keras's own variables warn under NumPy 2 when it converts them (not densekit's code).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PYTHON_PATH = os.path.dirname(os.path.dirname(densekit.__file__))


def data(n=37, features=5, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, features)).astype(dtype), rng.integers(0, 3, n)


def assert_same_predictions(a, b, x):
    expected = b.predict(x, verbose=0)
    np.testing.assert_allclose(a.predict(x, verbose=0), expected, rtol=2e-6, atol=1e-6)


def keras_model(activation="relu", dtype="float32", optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype=dtype),
            keras.layers.Dense(8, activation=activation, dtype=dtype),
            keras.layers.Dropout(0.25, seed=3, dtype=dtype),
            keras.layers.Activation("tanh", dtype=dtype),
            keras.layers.Dense(6, use_bias=False, dtype=dtype),
            keras.layers.Dense(3, activation="softmax", dtype=dtype),
        ],
        name="from_keras",
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def keras_file(tmp_path, model, name="m.keras"):
    path = tmp_path / name
    model.save(path)
    return path


# -- Keras -> densekit ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "activation", ["linear", "relu", "sigmoid", "tanh", "elu", "softplus", "gelu", "leaky_relu"]
)
def test_keras_files_load_and_predict_the_same(tmp_path, activation):
    source = keras_model(activation)
    path = keras_file(tmp_path, source)
    model = densekit.load_model(path)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense",
        "Dropout",
        "Activation",
        "Dense",
        "Dense",
    ]
    assert model.layers[0].get_config()["activation"] == activation
    assert model.layers[1].rate == 0.25 and model.layers[1].seed == 3
    for ours, theirs in zip(model.get_weights(), source.get_weights()):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)  # bitwise
    x, _ = data()
    assert_same_predictions(model, source, x)


def test_float64_keras_models_load_as_float64(tmp_path):
    source = keras_model(dtype="float64")
    model = densekit.load_model(keras_file(tmp_path, source))
    assert model.dtype == "float64"
    kernel_1, bias_1, kernel_2, kernel_3, bias_3 = source.get_weights()
    for ours, theirs in zip(model.get_weights(), source.get_weights()):
        assert ours.dtype == theirs.dtype == np.float64
        np.testing.assert_array_equal(ours, theirs)
    x, _ = data(dtype=np.float64)
    logits = np.tanh(np.maximum(x @ kernel_1 + bias_1, 0)) @ kernel_2 @ kernel_3 + bias_3
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: keras.optimizers.Adam(0.01, amsgrad=True), {"m", "v", "v_max"}),
        (lambda: keras.optimizers.AdamW(0.01, weight_decay=0.01), {"m", "v"}),
        (lambda: keras.optimizers.RMSprop(0.01), {"square_avg"}),
        (lambda: keras.optimizers.SGD(0.1), set()),
    ],
)
def test_compile_settings_and_optimizer_state_of_trained_keras_models(tmp_path, make, expected):
    source = keras_model(optimizer=make())
    x, y = data()
    source.fit(x, y, batch_size=16, epochs=2, verbose=0)
    model = densekit.load_model(keras_file(tmp_path, source))
    assert type(model.optimizer).__name__ == type(source.optimizer).__name__
    assert model.optimizer.learning_rate == pytest.approx(0.01 if expected else 0.1, rel=1e-7)
    assert type(model.loss).__name__ == "SparseCategoricalCrossentropy"
    assert model.metrics_names == ["loss", "accuracy"]
    iterations, state = model.optimizer_state()
    assert iterations == int(source.optimizer.iterations) == 6
    assert set(state) == expected
    slots = {"m": "momentum", "v": "velocity", "v_max": "velocity_hat", "square_avg": "velocity"}
    for name, flat in state.items():
        keras_values = [
            v.numpy().ravel()
            for v in source.optimizer.variables
            if v.path.endswith(f"_{slots[name]}") and "/" in v.path
        ]
        np.testing.assert_array_equal(flat, np.concatenate(keras_values))
    # compile=False loads the model alone
    plain = densekit.load_model(tmp_path / "m.keras", compile=False)
    assert not plain.compiled


# Keras's slot names (its variables' path suffixes) of densekit's optimizer states
KERAS_SLOT_NAMES = {
    "SGD": {"velocity": "momentum"},
    "RMSprop": {"square_avg": "velocity", "velocity": "momentum", "grad_avg": "average_gradient"},
    "Nadam": {"m": "momentum", "v": "velocity"},
    "Adamax": {"m": "momentum", "u": "norm"},
    "Adagrad": {"accumulator": "accumulator"},
    "Lion": {"m": "momentum"},
}


def keras_slots(optimizer, name: str) -> np.ndarray:
    """Keras's slots of one densekit state name, flat, in Keras's variable order."""
    suffix = KERAS_SLOT_NAMES[type(optimizer).__name__][name]
    values = [
        np.asarray(v.numpy()).ravel()
        for v in optimizer.variables
        if v.path.endswith(f"_{suffix}") and "/" in v.path
    ]
    return np.concatenate(values)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.SGD(0.05, momentum=0.8, nesterov=True),
        lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
        lambda: keras.optimizers.RMSprop(0.01, centered=True),
        lambda: keras.optimizers.RMSprop(0.01, momentum=0.3, centered=True),
        lambda: keras.optimizers.Nadam(0.01),
        lambda: keras.optimizers.Adamax(0.01),
        lambda: keras.optimizers.Adagrad(0.05),
        lambda: keras.optimizers.Lion(0.001),
    ],
    ids=[
        "sgd",
        "nesterov",
        "rmsprop-momentum",
        "rmsprop-centered",
        "rmsprop-both",
        "nadam",
        "adamax",
        "adagrad",
        "lion",
    ],
)
def test_optimizer_slots_cross_over_and_training_goes_on_the_same(tmp_path, make):
    """Keras trains, saves; densekit loads the slots bitwise; both train on and agree; densekit
    saves, Keras loads densekit's slots bitwise; both train on again and agree."""
    keras.utils.set_random_seed(1)
    source = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(3, "softmax")]
    )
    source.compile(make(), "sparse_categorical_crossentropy")
    x, y = data()
    fit = {"batch_size": 16, "epochs": 1, "shuffle": False, "verbose": 0}  # 37 rows: 3 steps
    source.fit(x, y, **{**fit, "epochs": 2})
    model = densekit.load_model(keras_file(tmp_path, source))
    assert type(model.optimizer).__name__ == type(source.optimizer).__name__
    iterations, state = model.optimizer_state()
    assert iterations == int(source.optimizer.iterations) == 6
    assert set(state) == set(KERAS_SLOT_NAMES[type(source.optimizer).__name__]) & set(
        model.optimizer.state_names()
    )
    assert state, "no slots crossed over"
    for name, flat in state.items():
        np.testing.assert_array_equal(flat, keras_slots(source.optimizer, name), err_msg=name)

    def same_training(theirs, what):
        theirs.fit(x, y, **fit)
        model.fit(x, y, **fit)
        for i, (ours, their) in enumerate(zip(model.get_weights(), theirs.get_weights())):
            np.testing.assert_allclose(ours, their, rtol=2e-5, atol=2e-6, err_msg=f"{what} {i}")

    same_training(source, "Keras -> densekit, weight")
    model.save(tmp_path / "back.keras")
    again = keras.saving.load_model(tmp_path / "back.keras")
    assert int(again.optimizer.iterations) == model.optimizer.iterations == 9
    for name, flat in model.optimizer_state()[1].items():
        np.testing.assert_array_equal(keras_slots(again.optimizer, name), flat, err_msg=name)
    if isinstance(again.optimizer, keras.optimizers.Nadam):
        # u_product, after densekit's updates and from the step count of a loaded state
        want = source.optimizer._u_product.numpy()
        np.testing.assert_allclose(again.optimizer._u_product.numpy(), want, rtol=1e-7)
        densekit.load_model(tmp_path / "back.keras").save(tmp_path / "loaded.keras")
        loaded = keras.saving.load_model(tmp_path / "loaded.keras")
        np.testing.assert_allclose(loaded.optimizer._u_product.numpy(), want, rtol=1e-7)
    same_training(again, "densekit -> Keras, weight")


def test_a_keras_model_without_an_input_layer_but_built_loads(tmp_path):
    source = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(2)])
    source.build((None, 5))
    model = densekit.load_model(keras_file(tmp_path, source))
    assert model.input_dim == 5 and not model.compiled
    assert_same_predictions(model, source, data()[0])


def test_initializer_and_regularizer_configs_cross_over(tmp_path):
    source = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                4,
                kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_avg", seed=7),
                bias_initializer=keras.initializers.Constant(0.5),
                kernel_regularizer=keras.regularizers.L2(0.003),
            ),
        ]
    )
    model = densekit.load_model(keras_file(tmp_path, source))
    dense = model.layers[0]
    assert isinstance(dense.kernel_initializer, initializers.VarianceScaling)
    assert dense.kernel_initializer.get_config() == {
        "scale": 2.0,
        "mode": "fan_avg",
        "distribution": "truncated_normal",
        "seed": 7,
    }
    assert dense.bias_initializer.get_config() == {"value": 0.5}
    assert dense.kernel_regularizer.l2 == pytest.approx(0.003)


# -- densekit -> Keras ----------------------------------------------------------------------
def densekit_model(optimizer="adam", trained=True):
    densekit.set_random_seed(5)
    model = densekit.Sequential(
        [
            layers.Input((5,), name="features"),
            layers.Dense(
                8,
                "relu",
                kernel_initializer=initializers.VarianceScaling(2.0, "fan_in", seed=1),
                bias_initializer=initializers.Constant(0.1),
                kernel_regularizer=regularizers.L2(1e-4),
            ),
            layers.Dropout(0.25, seed=2),
            layers.Activation("elu"),
            layers.Dense(6, "gelu", use_bias=False),
            layers.Dense(3, "softmax"),
        ],
        name="from_densekit",
    )
    model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
    if trained:
        x, y = data()
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    return model


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd", "adamw"])
def test_densekit_files_load_in_keras_and_predict_the_same(tmp_path, optimizer):
    model = densekit_model(optimizer)
    path = tmp_path / "d.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    for theirs, ours in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(theirs, ours)
    assert_same_predictions(loaded, model, data()[0])
    dense = loaded.layers[0]
    assert dense.activation.__name__ == "relu"
    assert dense.kernel_initializer.get_config()["scale"] == 2.0
    assert dense.kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4)
    assert loaded.layers[1].rate == 0.25 and loaded.layers[1].seed == 2
    assert type(loaded.optimizer).__name__ == type(model.optimizer).__name__
    assert int(loaded.optimizer.iterations) == model.optimizer.iterations == 6
    assert float(loaded.optimizer.learning_rate) == pytest.approx(model.optimizer.learning_rate)
    state = model.optimizer_state()[1]
    if "m" in state:
        momentums = [v.numpy().ravel() for v in loaded.optimizer.variables if "momentum" in v.path]
        np.testing.assert_array_equal(np.concatenate(momentums), state["m"])


def test_densekit_to_keras_to_densekit_round_trips_exactly(tmp_path):
    model = densekit_model()
    model.save(tmp_path / "a.keras")
    keras.saving.load_model(tmp_path / "a.keras").save(tmp_path / "b.keras")
    again = densekit.load_model(tmp_path / "b.keras")
    ours, theirs = model.get_config(), again.get_config()
    for layer in ours["layers"] + theirs["layers"]:
        layer["config"].pop("dtype", None)
    theirs["layers"][0]["config"]["name"] = "features"  # Keras renames its Input layers
    assert ours == theirs
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert again.get_compile_config()["optimizer"]["class_name"] == "Adam"
    iterations, state = model.optimizer_state()
    iterations_again, state_again = again.optimizer_state()
    assert iterations == iterations_again
    for name in state:
        np.testing.assert_array_equal(state[name], state_again[name])


def test_an_untrained_or_uncompiled_model_saves(tmp_path):
    untrained = densekit_model(trained=False)
    untrained.save(tmp_path / "u.keras")
    assert int(keras.saving.load_model(tmp_path / "u.keras").optimizer.iterations) == 0
    plain = densekit.Sequential([layers.Dense(2)])
    plain.build((None, 3))
    plain.save(tmp_path / "p.keras")
    loaded = keras.saving.load_model(tmp_path / "p.keras")
    assert getattr(loaded, "optimizer", None) is None
    assert_same_predictions(loaded, plain, data(features=3)[0])


# -- errors ----------------------------------------------------------------------------------
def rewrite(path, target, change_config=None, weights=None, extra=None):
    """Copy the .keras file ``path`` to ``target``, changing its config or weights."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    if change_config is not None:
        config = json.loads(entries["config.json"])
        change_config(config)
        entries["config.json"] = json.dumps(config).encode()
    if weights is not None:
        entries["model.weights.h5"] = weights
    entries.update(extra or {})
    with zipfile.ZipFile(target, "w") as archive:
        for name, raw in entries.items():
            archive.writestr(name, raw)
    return target


def test_layers_densekit_lacks_are_clear_errors(tmp_path):
    source = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Identity()])
    with pytest.raises(saving.ModelFileError) as error:
        densekit.load_model(keras_file(tmp_path, source))
    message = str(error.value)
    assert str(tmp_path / "m.keras") in message and "'Identity'" in message
    assert "supported: " in message and "Dense" in message


def test_a_key_densekit_does_not_support_is_a_clear_error(tmp_path):
    path = keras_file(tmp_path, keras_model())

    def change(config):
        config["config"]["layers"][1]["config"]["frobnicate"] = 3

    with pytest.raises(saving.ModelFileError, match=r"layer 1 \(Dense\).*frobnicate=3"):
        densekit.load_model(rewrite(path, tmp_path / "x.keras", change))


def test_functional_models_and_inputs_of_unknown_extent_are_refused(tmp_path):
    inputs = keras.Input((5,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(saving.ModelFileError, match=r"'Functional' model.*Sequential models only"):
        densekit.load_model(keras_file(tmp_path, functional, "f.keras"))
    sequences = keras.Sequential([keras.Input((None, 4)), keras.layers.Dense(2)])
    with pytest.raises(saving.ModelFileError, match=r"input shape \[None, None, 4\]"):
        densekit.load_model(keras_file(tmp_path, sequences, "s.keras"))


def test_a_model_of_several_axes_without_flatten_predicts_but_does_not_train(tmp_path):
    """Keras's Dense on (batch, 4, 5) inputs maps the last axis: densekit's too (outputs
    (n, 4, 2)); its losses need flat outputs."""
    images = keras.Sequential([keras.Input((4, 5)), keras.layers.Dense(2)])
    images.compile("sgd", "mse")
    model = densekit.load_model(keras_file(tmp_path, images, "i.keras"))
    assert model.input_shape == (None, 4, 5) and model.output_shape == (None, 4, 2)
    x = np.random.default_rng(1).standard_normal((6, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), images.predict(x, verbose=0), 1e-6, 1e-6)
    with pytest.raises(ValueError, match=r"outputs are \(None, 4, 2\).*Flatten"):
        model.fit(x, np.zeros((6, 4, 2), np.float32), verbose=0)


def test_models_of_samples_with_axes_cross_over_both_ways(tmp_path):
    """Input((4, 5)), layers on the last axis, Flatten: Keras's file loads (weights, optimizer
    state), trains on as in Keras, and densekit's file loads in Keras with the same shapes
    and predictions."""
    keras.utils.set_random_seed(2)
    source = keras.Sequential(
        [
            keras.Input((4, 5)),
            keras.layers.Dense(6, "tanh"),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(3, "softmax"),
        ]
    )
    source.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((37, 4, 5)).astype(np.float32), rng.integers(0, 3, 37)
    fit = {"batch_size": 16, "epochs": 1, "shuffle": False, "verbose": 0}
    source.fit(x, y, **fit)
    model = densekit.load_model(keras_file(tmp_path, source))
    assert model.input_shape == (None, 4, 5)
    assert [(None, *layer.output_sample_shape) for layer in model.layers] == [
        tuple(layer.output.shape) for layer in source.layers
    ]
    assert_same_predictions(model, source, x)
    source.fit(x, y, **fit)
    model.fit(x, y, **fit)
    for ours, theirs in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
    model.save(tmp_path / "back.keras")
    again = keras.saving.load_model(tmp_path / "back.keras")
    assert again.input_shape == (None, 4, 5)
    assert int(again.optimizer.iterations) == model.optimizer.iterations == 6
    assert_same_predictions(again, model, x)


def test_mixed_precision_is_refused(tmp_path):
    path = keras_file(tmp_path, keras_model())

    def change(config):
        config["config"]["layers"][1]["config"]["dtype"]["config"]["name"] = "mixed_float16"

    with pytest.raises(saving.ModelFileError, match="mixed_float16"):
        densekit.load_model(rewrite(path, tmp_path / "x.keras", change))


def test_unsupported_optimizers_fail_only_when_compiling(tmp_path):
    source = keras_model(optimizer=keras.optimizers.Ftrl())
    path = keras_file(tmp_path, source)
    with pytest.raises(saving.ModelFileError, match="Ftrl"):
        densekit.load_model(path)
    assert not densekit.load_model(path, compile=False).compiled


def test_suffixes_other_than_npz_and_keras_are_refused(tmp_path):
    model = densekit_model(trained=False)
    for name in ("m.h5", "m.hdf5", "m.txt", "m"):
        with pytest.raises(ValueError, match="filepath"):
            model.save(tmp_path / name)
    for name in ("w.keras", "w.h5"):
        with pytest.raises(ValueError, match="save_weights"):
            model.save_weights(tmp_path / name)
    (tmp_path / "old.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(saving.ModelFileError, match="legacy Keras HDF5"):
        densekit.load_model(tmp_path / "old.h5")
    assert os.listdir(tmp_path) == ["old.h5"]


def test_activations_without_a_keras_form_are_refused_on_save(tmp_path):
    model = densekit.Sequential([layers.Dense(2, "gelu_tanh")])
    model.build((None, 3))
    with pytest.raises(ValueError, match="gelu_tanh"):
        model.save(tmp_path / "g.keras")
    assert not (tmp_path / "g.keras").exists()


def test_importing_densekit_does_not_import_h5py(tmp_path):
    model = densekit_model(trained=False)
    model.save(tmp_path / "m.npz")
    code = (
        "import sys, densekit\n"
        f"densekit.load_model({str(tmp_path / 'm.npz')!r})\n"
        "assert 'h5py' not in sys.modules, 'h5py imported'\n"
    )
    environment = {**os.environ, "PYTHONPATH": PYTHON_PATH}
    subprocess.run([sys.executable, "-c", code], check=True, env=environment)


# -- the layer table ----------------------------------------------------------------------
@pytest.mark.parametrize("class_name", sorted(set(_keras_format.LAYERS) - {"InputLayer"}))
def test_the_layer_table_matches_keras(class_name):
    """Every entry names Keras's config keys and variables in Keras's order."""
    arguments = {"Dense": (3,), "Activation": ("relu",), "Dropout": (0.5,), "GaussianNoise": (0.1,)}
    layer = getattr(keras.layers, class_name)(*arguments.get(class_name, ()))
    layer.build((None, 4))
    mapping = _keras_format.LAYERS[class_name]
    assert set(layer.get_config()) - {"name", "trainable", "dtype"} <= set(mapping.keras_keys)
    variables = [v.path.rsplit("/", 1)[1] for v in layer.weights]
    expected = [v.attribute for v in mapping.variables]
    if class_name == "Normalization":  # Keras names its adapted mean and variance so
        assert len(variables) == len(expected)
    else:
        assert variables == expected
    assert [v.trainable for v in layer.weights] == [v.trainable for v in mapping.variables]


def test_a_layer_class_plugs_in_with_its_table_entry(tmp_path, monkeypatch):
    """A densekit class named like the table's entry is all a layer needs to be read (here a
    stand-in LayerNormalization declaring Keras's gamma and beta)."""

    class LayerNormalization(layers.Layer):
        def __init__(
            self,
            epsilon=1e-3,
            center=True,
            scale=True,
            beta_initializer="zeros",
            gamma_initializer="ones",
            **kwargs,
        ):
            super().__init__(**kwargs)
            self.epsilon, self.center, self.scale = epsilon, center, scale
            self.beta_initializer = initializers.get(beta_initializer)
            self.gamma_initializer = initializers.get(gamma_initializer)

        def build_weights(self, input_dim):
            self.input_dim = self.output_dim = input_dim
            self._weight_specs = [
                ("gamma", (input_dim,), self.gamma_initializer),
                ("beta", (input_dim,), self.beta_initializer),
            ]
            return input_dim

        def get_config(self):
            return {**super().get_config(), "epsilon": self.epsilon}

    monkeypatch.setattr(layers, "LayerNormalization", LayerNormalization, raising=False)
    monkeypatch.setitem(layers._REGISTRY, "LayerNormalization", LayerNormalization)
    source = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4), keras.layers.LayerNormalization(epsilon=0.01)]
    )
    norm = source.layers[1]
    norm.gamma.assign(np.arange(4, dtype=np.float32))
    norm.beta.assign(-np.arange(4, dtype=np.float32))
    contents = saving.read_model_file(keras_file(tmp_path, source))
    contents.config["layers"][2]["config"].pop("trainable", None)  # where Layer takes it
    assert contents.config["layers"][2] == {
        "class_name": "LayerNormalization",
        "config": {
            "name": norm.name,
            "epsilon": 0.01,
            "center": True,
            "scale": True,
            "beta_initializer": {"class_name": "Zeros", "config": {}},
            "gamma_initializer": {"class_name": "Ones", "config": {}},
        },
    }
    np.testing.assert_array_equal(contents.arrays["weight.2"], np.arange(4))
    np.testing.assert_array_equal(contents.arrays["weight.3"], -np.arange(4))


def test_a_table_entry_without_its_densekit_class_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(
        _keras_format.LAYERS, "Identity", _keras_format.LayerMapping("NoSuchDensekitClass")
    )
    source = keras.Sequential([keras.Input((5,)), keras.layers.Identity()])
    with pytest.raises(saving.ModelFileError, match="'Identity' is not supported"):
        densekit.load_model(keras_file(tmp_path, source))


# -- hostile files --------------------------------------------------------------------------
def h5_bytes(fill) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as store:
        fill(store)
    return buffer.getvalue()


def small_keras_file(tmp_path):
    source = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    return keras_file(tmp_path, source, "small.keras")


def dense_weights(kernel, **options):
    def fill(store):
        group = store.create_group("layers/dense/vars")
        group.create_dataset("0", data=kernel, **options)
        group.create_dataset("1", data=np.zeros(4, np.float32))

    return h5_bytes(fill)


def refused(path, match):
    tracemalloc.start()
    try:
        with pytest.raises(saving.ModelFileError, match=match) as error:
            densekit.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(error.value)
    assert peak < 32 * 2**20  # nothing large was allocated
    return error


@pytest.mark.parametrize("units", [10**7, 10**12])
def test_a_config_asking_for_huge_weights_fails_before_allocating(tmp_path, units):
    def change(config):
        config["config"]["layers"][1]["config"]["units"] = units

    path = rewrite(small_keras_file(tmp_path), tmp_path / "huge.keras", change)
    refused(path, "implies .* bytes of weights")


def test_zip_bombs_are_refused(tmp_path):
    path = small_keras_file(tmp_path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    target = tmp_path / "bomb.keras"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("config.json", entries["config.json"])
        archive.writestr("model.weights.h5", b"\0" * 50 * 2**20, zipfile.ZIP_DEFLATED)
    refused(target, "model.weights.h5 (claims|expands)")
    config = b" " * 64 * 2**20 + entries["config.json"]
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("config.json", config, zipfile.ZIP_DEFLATED)
    refused(target, "config.json claims")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (dense_weights(np.zeros((5, 4), np.int64)), "unexpected dtype int64"),
        (dense_weights(np.zeros((5, 4), np.float16)), "unexpected dtype float16"),
        (dense_weights(np.array([[b"abcd"] * 4] * 5)), "unexpected dtype"),
        (dense_weights(np.zeros((4, 5), np.float32)), r"has shape \(4, 5\)"),
        (dense_weights(np.zeros((5, 4), np.float32), compression="gzip"), "contiguous"),
        (h5_bytes(lambda store: store.create_group("layers")), "missing"),
        (b"not hdf5 at all" * 10, "not a readable .keras file"),
    ],
)
def test_malformed_weights_are_refused(tmp_path, weights, match):
    target = rewrite(small_keras_file(tmp_path), tmp_path / "bad.keras", weights=weights)
    refused(target, match)


def test_links_to_other_files_are_refused(tmp_path):
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as store:
        store.create_dataset("kernel", data=np.zeros((5, 4), np.float32))

    def fill(store):
        group = store.create_group("layers/dense/vars")
        group["0"] = h5py.ExternalLink(str(outside), "kernel")
        group.create_dataset("1", data=np.zeros(4, np.float32))

    target = rewrite(small_keras_file(tmp_path), tmp_path / "link.keras", weights=h5_bytes(fill))
    refused(target, "ExternalLink refused")


def test_malformed_configs_are_refused(tmp_path):
    path = small_keras_file(tmp_path)
    deep = tmp_path / "deep.keras"
    rewrite(path, deep, extra={"config.json": b"[" * 100 + b"]" * 100})
    refused(deep, "nested 100 deep")
    nan = tmp_path / "nan.keras"
    rewrite(path, nan, extra={"config.json": b'{"class_name": "Sequential", "x": NaN}'})
    refused(nan, "non-finite number NaN")
    rewrite(path, nan, extra={"config.json": b'{"class_name": "Sequential", "x": 1e400}'})
    refused(nan, "non-finite number 1e400")
    for text, match in [
        (b"{", "not a readable .keras file"),
        (b"[]", "not a Keras model config"),
        (b'{"class_name": "Sequential", "config": {"layers": []}}', "no layers"),
    ]:
        rewrite(path, tmp_path / "c.keras", extra={"config.json": text})
        refused(tmp_path / "c.keras", match)
    with zipfile.ZipFile(tmp_path / "empty.keras", "w"):
        pass
    refused(tmp_path / "empty.keras", "no config.json")
    (tmp_path / "garbage.keras").write_bytes(b"garbage")
    refused(tmp_path / "garbage.keras", "not a readable .keras file")
    (tmp_path / "dir.keras").mkdir()
    refused(tmp_path / "dir.keras", "not a regular file")
    with pytest.raises(FileNotFoundError):
        densekit.load_model(tmp_path / "missing.keras")


@pytest.mark.parametrize(
    "schedule",
    [
        lambda: schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.9, staircase=True),
        lambda: schedules.CosineDecay(0.01, decay_steps=20, alpha=0.1),
    ],
)
def test_learning_rate_schedules_cross_over(tmp_path, schedule):
    model = densekit_model(optimizers.Adam(schedule()))
    model.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    assert int(loaded.optimizer.iterations) == 6
    rate = float(loaded.optimizer.learning_rate)
    assert rate == pytest.approx(model.optimizer.learning_rate, rel=1e-6)
    loaded.save(tmp_path / "back.keras")
    again = densekit.load_model(tmp_path / "back.keras")
    ours = model.optimizer.get_config()["learning_rate"]
    theirs = again.optimizer.get_config()["learning_rate"]
    assert theirs["class_name"] == ours["class_name"]
    for key, value in ours["config"].items():
        if key != "name":
            assert theirs["config"][key] == pytest.approx(value), key
    assert again.optimizer.learning_rate == pytest.approx(rate, rel=1e-6)


@pytest.mark.parametrize("name", sorted(initializers._REGISTRY))
def test_every_initializer_crosses_over(tmp_path, name):
    """Keras reads each densekit initializer's config as the same initializer, and
    densekit reads it back unchanged."""
    initializer = initializers.get(name)
    model = densekit.Sequential([layers.Dense(5, kernel_initializer=initializer)])
    model.build((None, 5))  # a square kernel: every initializer takes it
    model.save(tmp_path / "i.keras")
    keras_initializer = keras.saving.load_model(tmp_path / "i.keras").layers[0].kernel_initializer
    ours = initializers.serialize(initializer)
    assert type(keras_initializer).__name__ == ours["class_name"]
    keras_config = keras_initializer.get_config()
    for key, value in ours["config"].items():
        # Keras's Identity leaves its gain out of its config: its attribute then
        assert keras_config.get(key, getattr(keras_initializer, key, None)) == value, key
    again = densekit.load_model(tmp_path / "i.keras")
    assert initializers.serialize(again.layers[0].kernel_initializer) == ours


def test_keras_loss_and_metric_objects_cross_over(tmp_path):
    source = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    source.compile(
        keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=[keras.metrics.MeanSquaredError(name="mse"), "categorical_accuracy"],
    )
    model = densekit.load_model(keras_file(tmp_path, source))
    assert model.loss.get_config() == {
        "name": "categorical_crossentropy",
        "reduction": "sum_over_batch_size",
        "from_logits": True,
        "label_smoothing": pytest.approx(0.1),
    }
    assert model.optimizer.get_config()["nesterov"] is True
    assert model.metrics_names == ["loss", "mse", "categorical_accuracy"]
    model.save(tmp_path / "back.keras")
    # SGD's momentum slots cross over (zeros before any training): no warning from Keras
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = keras.saving.load_model(tmp_path / "back.keras")
    assert int(loaded.optimizer.iterations) == 0
    assert loaded.loss.get_config()["from_logits"] is True
    assert loaded.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.keras"
    os.mkfifo(fifo)
    refused(fifo, "not a regular file")


def test_frozen_layers_and_their_optimizer_slots_cross_over(tmp_path):
    """A frozen layer stays frozen both ways, and the optimizer's slots (Keras keeps them
    for its trainable variables only) land on the right weights."""
    source = keras_model(optimizer=keras.optimizers.Adam(0.01))
    source.layers[0].trainable = False
    source.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x, y = data()
    source.fit(x, y, batch_size=16, epochs=2, verbose=0)
    model = densekit.load_model(keras_file(tmp_path, source))
    assert [layer.trainable for layer in model.layers] == [False, True, True, True, True]
    iterations, state = model.optimizer_state()
    assert iterations == 6
    momentums = [v.numpy().ravel() for v in source.optimizer.variables if "momentum" in v.path]
    np.testing.assert_array_equal(state["m"], np.concatenate(momentums))
    assert state["m"].size == sum(w.size for w in model.trainable_weights)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "back.keras")
    loaded = keras.saving.load_model(tmp_path / "back.keras")
    assert [layer.trainable for layer in loaded.layers] == [False, True, True, True, True]
    assert int(loaded.optimizer.iterations) == 9
    momentums = [v.numpy().ravel() for v in loaded.optimizer.variables if "momentum" in v.path]
    np.testing.assert_array_equal(np.concatenate(momentums), model.optimizer_state()[1]["m"])
    model.trainable = False
    model.save(tmp_path / "all-frozen.keras")
    frozen = keras.saving.load_model(tmp_path / "all-frozen.keras")
    assert not any(layer.trainable for layer in frozen.layers)
    assert not densekit.load_model(tmp_path / "all-frozen.keras").trainable


def test_regularizers_and_constraints_cross_over(tmp_path):
    model = densekit.Sequential(
        [
            layers.Input((5,)),
            layers.Dense(
                4,
                kernel_regularizer=regularizers.L1L2(0.01, 0.02),
                bias_regularizer=regularizers.L1(0.5),
                activity_regularizer=regularizers.L2(0.04),
                kernel_constraint=constraints.MaxNorm(2.0),
                bias_constraint=constraints.NonNeg(),
            ),
            layers.Dense(2, kernel_constraint=constraints.UnitNorm()),
        ]
    )
    model.save(tmp_path / "r.keras")
    loaded = keras.saving.load_model(tmp_path / "r.keras")
    dense = loaded.layers[0]
    assert type(dense.kernel_regularizer).__name__ == "L1L2"
    assert dense.kernel_regularizer.get_config() == {"l1": 0.01, "l2": 0.02}
    assert dense.bias_regularizer.get_config() == {"l1": 0.5}
    assert dense.activity_regularizer.get_config() == {"l2": 0.04}
    assert dense.kernel_constraint.get_config() == {"max_value": 2.0, "axis": 0}
    assert type(dense.bias_constraint).__name__ == "NonNeg"
    assert type(loaded.layers[1].kernel_constraint).__name__ == "UnitNorm"
    loaded.save(tmp_path / "back.keras")
    again = densekit.load_model(tmp_path / "back.keras")

    def without_input_name(config):  # Keras names the InputLayer of a Sequential it loads anew
        for layer in config["layers"]:
            if layer["class_name"] == "InputLayer":
                layer["config"].pop("name")
        return config

    assert without_input_name(again.get_config()) == without_input_name(
        model.get_config() | {"name": again.name}
    )


def test_settings_keras_has_no_form_for_are_left_out_with_a_warning(tmp_path):
    model = densekit_model(trained=False)
    model.compile("adam", "sparse_categorical_crossentropy", check_finite=True)
    with pytest.warns(UserWarning, match="Keras has no check_finite"):
        model.save(tmp_path / "c.keras")
    assert type(keras.saving.load_model(tmp_path / "c.keras").optimizer).__name__ == "Adam"

    class Mine(optimizers.SGD):  # a densekit optimizer Keras does not know
        pass

    model.compile(Mine(0.1, name="mine"), "sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="Keras's Mine has no form for Mine"):
        model.save(tmp_path / "m.keras")
    assert getattr(keras.saving.load_model(tmp_path / "m.keras"), "optimizer", None) is None


def test_model_checkpoint_writes_keras_files(tmp_path):
    model = densekit_model(trained=False)
    x, y = data()
    checkpoint = densekit.callbacks.ModelCheckpoint(tmp_path / "ckpt-{epoch}.keras")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[checkpoint])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.keras", "ckpt-2.keras"]
    loaded = keras.saving.load_model(tmp_path / "ckpt-2.keras")
    assert int(loaded.optimizer.iterations) == 6
    assert_same_predictions(loaded, model, x)
