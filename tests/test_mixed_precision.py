"""Mixed precision ("mixed_bfloat16") and int8 quantization in the model layer.

The model's bf16 and int8 layers must compute exactly what the kernels compute (predict is the
chain of dense_forward_bf16 / dense_forward_int8 calls, bit for bit), train and predict the
same bits on any thread count, keep their policy through save/load, and lose at most half a
point of accuracy against float32 on two of scikit-learn's bundled data sets.
"""

from __future__ import annotations

import warnings

import ml_dtypes  # noqa: F401 - the bf16 dtype the kernels take
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

import densekit
from densekit import kernels as K
from densekit import layers, mixed_precision

from .helpers import json_of_child

# Keras on torch converts arrays with NumPy 1's __array__ signature
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    # Keras's quantize warns that its InputLayer has no quantize method
    pytest.mark.filterwarnings("ignore:Layer InputLayer does not have:UserWarning"),
]


@pytest.fixture(autouse=True)
def _float32_policy_after():
    yield
    mixed_precision.set_global_policy("float32")


def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def breast_cancer():
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order], y[order]
    train, test = slice(0, 400), slice(400, None)
    mean, std = x[train].mean(0), x[train].std(0)
    x = ((x - mean) / std).astype(np.float32)
    return (x[train], y[train]), (x[test], y[test])


def mlp(features, classes, policy=None, activation="relu"):
    densekit.set_random_seed(3)
    model = densekit.Sequential(
        [
            layers.Input((features,)),
            layers.Dense(128, activation, dtype=policy),
            layers.Dense(64, "gelu", dtype=policy),
            layers.Dense(classes, "softmax", dtype=policy),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


# -- policies ----------------------------------------------------------------------------------


def test_policies_as_keras_names_them():
    policy = mixed_precision.DTypePolicy("mixed_bfloat16")
    assert (policy.name, policy.compute_dtype, policy.variable_dtype) == (
        "mixed_bfloat16",
        "bfloat16",
        "float32",
    )
    assert mixed_precision.Policy is mixed_precision.DTypePolicy
    assert mixed_precision.global_policy().name == "float32"
    mixed_precision.set_global_policy("mixed_bfloat16")
    dense = layers.Dense(4)
    assert dense.dtype_policy.name == "mixed_bfloat16" and dense.compute_dtype == "bfloat16"
    assert dense.variable_dtype == "float32"
    assert layers.Dense(4, dtype="float32").dtype_policy.name == "float32"
    mixed_precision.set_global_policy(None)
    assert layers.Dense(4).dtype_policy.name == "float32"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("mixed_float16", "float16 products are not implemented"),
        ("bfloat16", "bfloat16 variables are not supported"),
        ("int4", "expected a policy name"),
    ],
)
def test_unsupported_policies_are_refused_with_the_reason(name, why):
    with pytest.raises((ValueError, TypeError), match=why):
        mixed_precision.set_global_policy(name)
    if name != "int4":
        with pytest.raises(ValueError, match=why):
            layers.Dense(3, dtype=name)


def test_int8_policy_is_not_global():
    with pytest.raises(ValueError, match=r"model\.quantize"):
        mixed_precision.set_global_policy("int8_from_float32")


def test_a_mixed_layer_needs_a_float32_model():
    with pytest.raises(ValueError, match=r"policy 'mixed_bfloat16'.*the model's dtype is float64"):
        densekit.Sequential(
            [layers.Input((3,)), layers.Dense(2, dtype="mixed_bfloat16")], dtype="float64"
        )


# -- mixed_bfloat16 --------------------------------------------------------------------------------


def test_predict_is_the_chain_of_bf16_kernels():
    (x, _), _ = digits()
    model = mlp(64, 10, "mixed_bfloat16")
    got = model.predict(x[:100], batch_size=37)
    h = x[:100]
    for dense in model.layers:
        h = K.dense_forward_bf16(
            h, K.Bf16Weights(dense.kernel), dense.bias, activation=dense.activation.name
        )
    np.testing.assert_array_equal(got, h)
    np.testing.assert_array_equal(model.predict(x[:1]), h[:1])  # the batch-1 path


def test_a_training_step_is_the_bf16_kernels_step():
    """One SGD step of the mixed model equals the step made from the kernels by hand."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 12)).astype(np.float32)
    y = rng.standard_normal((16, 5)).astype(np.float32)
    model = densekit.Sequential(
        [layers.Input((12,)), layers.Dense(5, "tanh", dtype="mixed_bfloat16")]
    )
    model.compile(densekit.optimizers.SGD(0.1), "mse")
    w, b = model.layers[0].kernel.copy(), model.layers[0].bias.copy()
    model.train_on_batch(x, y)
    packed = K.Bf16Weights(w)
    z = np.empty((16, 5), np.float32)
    out = K.dense_forward_bf16(x, packed, b, activation="tanh", preact_out=z)
    _, grad = K.mse(out, y)
    _, dw, db = K.dense_backward_bf16(grad, x, packed, y=out, activation="tanh", need_dx=False)
    np.testing.assert_array_equal(model.layers[0].kernel, w - np.float32(0.1) * dw)
    np.testing.assert_array_equal(model.layers[0].bias, b - np.float32(0.1) * db)


@pytest.mark.parametrize("feed", ["train_on_batch", "fit", "fit_batches"])
def test_the_first_mixed_layer_rounds_x_once_to_the_same_step(feed):
    """The plan rounds x to bf16 once per step for the first mixed layer's forward and dw:
    every way a batch arrives (read in place by train_on_batch, gathered by fit from arrays,
    copied into the plan from fit's batches of a generator; a short last batch) gives the
    SGD steps made from the float32-x kernels by hand."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((23, 12)).astype(np.float32)  # not exact in bf16
    y = rng.standard_normal((23, 5)).astype(np.float32)
    model = densekit.Sequential(
        [
            layers.Input((12,)),
            layers.Dense(6, "relu", dtype="mixed_bfloat16"),
            layers.Dense(5, dtype="mixed_bfloat16"),
        ]
    )
    model.compile(densekit.optimizers.SGD(0.1), "mse")
    weights = [w.copy() for w in model.get_weights()]
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    if feed == "fit":
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    elif feed == "fit_batches":
        model.fit(iter(batches), steps_per_epoch=2, epochs=1, verbose=0)
    else:
        for xb, yb in batches:
            model.train_on_batch(xb, yb)
    lr = np.float32(0.1)
    for xb, yb in batches:
        w1, b1, w2, b2 = weights
        p1, p2 = K.Bf16Weights(w1), K.Bf16Weights(w2, transposed=True)
        h = K.dense_forward_bf16(xb, p1, b1, activation="relu")
        out = K.dense_forward_bf16(h, p2, b2)
        _, grad = K.mse(out, yb)
        dh, dw2, db2 = K.dense_backward_bf16(grad, h, p2, y=out)
        _, dw1, db1 = K.dense_backward_bf16(dh, xb, p1, y=h, activation="relu", need_dx=False)
        weights = [w1 - lr * dw1, b1 - lr * db1, w2 - lr * dw2, b2 - lr * db2]
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)


def test_mixed_training_is_bitwise_identical_for_any_thread_count():
    (x, y), _ = digits()
    results = []
    for threads in (1, 2, 3):
        model = mlp(64, 10, "mixed_bfloat16")
        with densekit.num_threads(threads):
            model.fit(x[:512], y[:512], epochs=2, batch_size=64, verbose=0)
        results.append(np.concatenate([w.ravel() for w in model.get_weights()]))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_frozen_and_mixed_layers_train_together():
    (x, y), _ = digits()
    model = mlp(64, 10, "mixed_bfloat16")
    model.layers[0].trainable = False
    frozen = model.layers[0].kernel.copy()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    np.testing.assert_array_equal(model.layers[0].kernel, frozen)


def test_policy_survives_save_and_load(tmp_path):
    (x, y), _ = digits()
    model = mlp(64, 10, "mixed_bfloat16")
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    path = tmp_path / "mixed.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    assert [layer.dtype_policy.name for layer in loaded.layers] == ["mixed_bfloat16"] * 3
    np.testing.assert_array_equal(loaded.predict(x[:50]), model.predict(x[:50]))
    # training resumes bitwise: same weights, optimizer state and policy
    model.fit(x[256:512], y[256:512], epochs=1, batch_size=64, verbose=0, shuffle=False)
    loaded.fit(x[256:512], y[256:512], epochs=1, batch_size=64, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_predict_follows_set_weights():
    (x, _), _ = digits()
    model = mlp(64, 10, "mixed_bfloat16")
    before = model.predict(x[:20])
    weights = model.get_weights()
    model.set_weights([w * 0.5 for w in weights])
    assert not np.array_equal(model.predict(x[:20]), before)
    model.layers[0].set_weights(weights[:2])  # through the layer: its generation moves
    model.set_weights(weights)
    np.testing.assert_array_equal(model.predict(x[:20]), before)


# -- int8 ----------------------------------------------------------------------------------------


def test_quantize_gives_int8_layers_and_predict_is_the_int8_chain():
    (x, y), _ = digits()
    model = mlp(64, 10)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    float_weights = model.get_weights()
    quantized = densekit.quantize(model)
    for a, b in zip(model.get_weights(), float_weights):  # the source model is untouched
        np.testing.assert_array_equal(a, b)
    assert [layer.dtype_policy.name for layer in quantized.layers] == ["int8_from_float32"] * 3
    h = x[:75]
    for dense, source in zip(quantized.layers, model.layers):
        expected = K.QuantizedWeights.quantize(source.kernel)
        np.testing.assert_array_equal(dense.quantized_kernel.weights, expected.weights)
        np.testing.assert_array_equal(dense.kernel_scale, expected.scales)
        assert not dense.weight_is_trainable("kernel")
        h = K.dense_forward_int8(h, expected, dense.bias, activation=dense.activation.name)
    np.testing.assert_array_equal(quantized.predict(x[:75], batch_size=16), h)
    np.testing.assert_array_equal(quantized.predict_async(x[:75]).result(), h)


def test_mixed_predict_is_one_chain_call_of_bf16_layers():
    # predict runs a mixed_bfloat16 model as one DenseChain call of bf16 steps: the bits of
    # the layer-by-layer bf16 kernels, at batch 1 and in batches, also after training moved
    # the weights (the chain's Bf16Weights are packed again before the call).
    (x, y), _ = digits()
    model = mlp(64, 10, "mixed_bfloat16")

    def composed(rows):
        h = rows
        for dense in model.layers:
            packed = K.Bf16Weights(dense.kernel)
            h = K.dense_forward_bf16(h, packed, dense.bias, activation=dense.activation.name)
        return h

    np.testing.assert_array_equal(model.predict(x[:1]), composed(x[:1]))
    model.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    np.testing.assert_array_equal(model.predict(x[:1]), composed(x[:1]))
    np.testing.assert_array_equal(model.predict(x[:50], batch_size=16), composed(x[:50]))


def test_quantized_predict_follows_new_int8_weights():
    # predict runs an int8 model as one DenseChain call holding each layer's QuantizedWeights;
    # setting the weights makes new ones, and predict follows them at once.
    (x, _), _ = digits()
    model = mlp(64, 10)
    model.quantize("int8")
    before = model.predict(x[:1])
    weights = model.get_weights()  # kernel (int8 values times their scales), bias, scale
    doubled = [w * 2 if i % 3 == 2 else w for i, w in enumerate(weights)]  # every scale
    model.set_weights(doubled)
    h = x[:5]
    for dense in model.layers:
        h = K.dense_forward_int8(
            h, dense.quantized_kernel, dense.bias, activation=dense.activation.name
        )
    np.testing.assert_array_equal(model.predict(x[:5]), h)
    np.testing.assert_array_equal(model.predict(x[:1]), h[:1])
    assert not np.array_equal(h[:1], before)
    model.set_weights(weights)
    np.testing.assert_array_equal(model.predict(x[:1]), before)


def test_quantized_model_saves_loads_and_refuses_training(tmp_path):
    (x, y), _ = digits()
    model = mlp(64, 10)
    model.quantize("int8")
    path = tmp_path / "int8.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x[:40]), model.predict(x[:40]))
    for a, b in zip(loaded.layers, model.layers):
        np.testing.assert_array_equal(a.quantized_kernel.weights, b.quantized_kernel.weights)
    assert np.isfinite(loaded.evaluate(x[:100], y[:100], verbose=0)).all()
    with pytest.raises(ValueError, match=r"int8-quantized .*inference only"):
        loaded.fit(x[:64], y[:64], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="no Dense layer left to quantize"):
        model.quantize("int8")


def test_quantize_checks_its_arguments():
    model = mlp(64, 10)
    with pytest.raises(ValueError, match="mode: expected 'int8'"):
        model.quantize("int4")
    wide = densekit.Sequential([layers.Input((3,)), layers.Dense(2)], dtype="float64")
    with pytest.raises(ValueError, match="int8 weights stand for float32 ones"):
        wide.quantize("int8")
    with pytest.raises(ValueError, match="not built"):
        densekit.Sequential([layers.Dense(2)]).quantize("int8")
    with pytest.raises(TypeError, match=r"model: expected a densekit\.Sequential"):
        densekit.quantize("model")
    model.quantize("int8")
    bad = model.get_weights()
    bad[0] = bad[0] * 200  # beyond 127 times the scale
    with pytest.raises(
        ValueError, match=r"kernel / kernel_scale must round to integers in \[-127, 127\]"
    ):
        model.layers[0].set_weights(bad[:3])


# -- accuracy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "classes", "epochs"),
    [(digits, 10, 12), (breast_cancer, 2, 25)],
    ids=["digits", "breast_cancer"],
)
def test_bf16_and_int8_accuracy_within_half_a_point_of_float32(data, classes, epochs):
    (x, y), (x_test, y_test) = data()

    def accuracy(model):
        return float((model.predict(x_test, batch_size=256).argmax(1) == y_test).mean())

    full = mlp(x.shape[1], classes)
    full.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    mixed = mlp(x.shape[1], classes, "mixed_bfloat16")
    mixed.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    quantized = densekit.quantize(full)
    base = accuracy(full)
    assert base > (0.9 if classes == 10 else 0.93)
    assert accuracy(mixed) >= base - 0.005
    assert accuracy(quantized) >= base - 0.005


# -- .keras files ---------------------------------------------------------------------------------


def test_keras_files_carry_the_mixed_policy_and_refuse_int8(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")
    (x, _), _ = digits()
    model = mlp(64, 10, "mixed_bfloat16")
    path = tmp_path / "mixed.keras"
    model.save(path)
    theirs = keras.saving.load_model(path)
    assert [layer.dtype_policy.name for layer in theirs.layers] == ["mixed_bfloat16"] * 3
    # Keras computes bias, activation and the activations between layers in bf16
    np.testing.assert_allclose(theirs.predict(x[:20], verbose=0), model.predict(x[:20]), atol=0.03)
    back = densekit.load_model(path)
    assert [layer.dtype_policy.name for layer in back.layers] == ["mixed_bfloat16"] * 3
    np.testing.assert_array_equal(back.predict(x[:20]), model.predict(x[:20]))
    model.quantize("int8")
    with pytest.raises(ValueError, match="int8-quantized; Keras's int8 layers"):
        model.save(tmp_path / "int8.keras")
    theirs.quantize("int8")
    theirs.save(tmp_path / "keras_int8.keras")
    with pytest.raises(densekit.saving.ModelFileError, match="int8-quantized Keras layers"):
        densekit.load_model(tmp_path / "keras_int8.keras")


_SLOW_PATH_CHILD = """
import json, warnings
import numpy as np
import densekit
from densekit import layers

def model():
    m = densekit.Sequential([layers.Input((12,)), layers.Dense(8, activation="relu",
        dtype="mixed_bfloat16"), layers.Dense(3, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.train_on_batch(np.ones((4, 12), np.float32), np.zeros(4, np.int64))
    return m

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model()
    model()  # once per process
print(json.dumps({
    "path": densekit.kernels.bf16_config()["path"],
    "warnings": [[w.category.__name__, str(w.message), w.filename] for w in caught],
}))
"""


def test_a_forced_slow_bf16_path_warns_once_at_the_users_line():
    child = json_of_child(_SLOW_PATH_CHILD, {"DENSEKIT_BF16": "emulated"}, timeout=120)
    assert child["path"] == "emulated"
    [(category, message, filename)] = child["warnings"]
    assert category == "SlowBfloat16Warning"
    assert "'emulated' path (DENSEKIT_BF16='emulated' forces it" in message
    assert "slower than with the float32 policy" in message
    assert filename == "<string>"  # the user's code, not densekit's


def test_the_amx_path_does_not_warn():
    if "amx" not in K.bf16_config()["available"]:
        pytest.skip("no AMX on this CPU")
    child = json_of_child(_SLOW_PATH_CHILD, {}, timeout=120)
    assert child == {"path": "amx", "warnings": []}


@pytest.mark.parametrize(("bf16", "fp32", "warns"), [(110.0, 220.0, True), (230.0, 115.0, False)])
def test_the_speed_check_warns_below_the_ratio(monkeypatch, bf16, fp32, warns):
    # Intel Xeon without AMX (AVX512-BF16 at half float32's rate) against Zen 4 (twice it)
    monkeypatch.setattr(mixed_precision, "_checked", False)
    config = {"path": "avx512_bf16", "amx_note": "", "forced": False}
    monkeypatch.setattr(mixed_precision.kernels, "bf16_config", lambda: config)
    rates = {"bfloat16": bf16, "float32": fp32}
    monkeypatch.setattr(mixed_precision, "_peak_gflops", lambda dtype, steps: rates[dtype])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mixed_precision.check_bf16_speed()
        mixed_precision.check_bf16_speed()
    assert [w.category for w in caught] == ([mixed_precision.SlowBfloat16Warning] if warns else [])
    if warns:
        assert "at about 110 GFLOP/s per core, against 220 for float32" in str(caught[0].message)
