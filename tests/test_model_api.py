"""The model API of Keras 3 (get_layer, trainable/non-trainable weights, shapes, clone_model,
summary, frozen layers), the initializers TruncatedNormal/Orthogonal/Identity, the
regularizers L1/L1L2 with bias and activity penalties, and the constraints MaxNorm/NonNeg/
UnitNorm: their formulas, their gradients and the same training runs as Keras 3 itself
(torch backend; those tests are skipped where keras is not installed)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import densekit
from densekit import constraints, initializers, kernels, regularizers
from densekit.layers import Activation, Dense, Dropout, Input

# torch's tensors meet NumPy 2's copy= protocol with a DeprecationWarning (an error under
# the strict settings) whenever Keras converts one to NumPy
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    module = pytest.importorskip("keras")
    if module.backend.backend() != "torch":
        pytest.skip("the parity tests run Keras on its torch backend")
    return module


def regression_data(n=50, features=6, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(features, outputs))) + 0.1 * rng.normal(size=(n, outputs))
    return x, y.astype(np.float32)


def keras_twin(keras, model, layer_kwargs):
    """A Keras Sequential with ``model``'s Dense layers (units, activation) and weights;
    ``layer_kwargs[i]`` (Keras objects) go to the i-th Dense layer."""
    made = [keras.Input((model.input_dim,))]
    for i, layer in enumerate(model.layers):
        made.append(
            keras.layers.Dense(
                layer.units,
                activation=layer.activation.name,
                use_bias=layer.use_bias,
                **layer_kwargs.get(i, {}),
            )
        )
        made[-1].trainable = layer.trainable
    twin = keras.Sequential(made)
    twin.set_weights(model.get_weights())
    return twin


def train_both(keras, model, twin, x, y, epochs=3, batch_size=16, lr=0.05, loss="mse"):
    """fit both models (SGD, no shuffling, a partial last batch) and return both Histories."""
    model.compile(densekit.optimizers.SGD(learning_rate=lr), loss)
    twin.compile(keras.optimizers.SGD(learning_rate=lr), loss)
    ours = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    theirs = twin.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return ours.history, theirs.history


def keras_weights(keras, twin):
    return [keras.ops.convert_to_numpy(v.value) for v in twin.weights]


def assert_same_run(keras, model, twin, ours, theirs, x, y):
    """float32 agreement: a few float32 roundings, accumulated over the run's 12 steps."""
    np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-6)
    for a, b in zip(model.get_weights(), keras_weights(keras, twin), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        model.evaluate(x, y, verbose=0), twin.evaluate(x, y, verbose=0), rtol=1e-6
    )


# -- Keras parity ------------------------------------------------------------------------------


def test_frozen_layer_trains_like_keras(keras):
    x, y = regression_data()
    model = densekit.Sequential([Input((6,)), Dense(9, "tanh"), Dense(7, "relu"), Dense(3)])
    model.layers[1].trainable = False
    frozen = [w.copy() for w in model.layers[1].weights]
    twin = keras_twin(keras, model, {})
    ours, theirs = train_both(keras, model, twin, x, y)
    assert_same_run(keras, model, twin, ours, theirs, x, y)
    for kept, now in zip(frozen, model.layers[1].weights):
        np.testing.assert_array_equal(kept, now)  # bitwise untouched


def test_frozen_first_layer_trains_like_keras(keras):
    x, y = regression_data(seed=1)
    model = densekit.Sequential([Input((6,)), Dense(9, "tanh"), Dense(3)])
    model.layers[0].trainable = False
    twin = keras_twin(keras, model, {})
    ours, theirs = train_both(keras, model, twin, x, y)
    assert_same_run(keras, model, twin, ours, theirs, x, y)


@pytest.mark.parametrize(
    "kind",
    ["l1_kernel", "l1l2_kernel", "l1_bias", "l2_bias", "activity_l1", "activity_l1l2_last"],
)
def test_regularizers_train_like_keras(keras, kind):
    x, y = regression_data(seed=2)
    ours_args, theirs_args = {}, {}
    if kind == "l1_kernel":
        ours_args[0] = {"kernel_regularizer": regularizers.L1(0.01)}
        theirs_args[0] = {"kernel_regularizer": keras.regularizers.L1(0.01)}
    elif kind == "l1l2_kernel":
        ours_args[1] = {"kernel_regularizer": regularizers.L1L2(0.003, 0.02)}
        theirs_args[1] = {"kernel_regularizer": keras.regularizers.L1L2(0.003, 0.02)}
    elif kind == "l1_bias":
        ours_args[0] = {"bias_regularizer": regularizers.L1(0.05)}
        theirs_args[0] = {"bias_regularizer": keras.regularizers.L1(0.05)}
    elif kind == "l2_bias":
        ours_args[1] = {"bias_regularizer": "l2"}
        theirs_args[1] = {"bias_regularizer": "l2"}
    elif kind == "activity_l1":
        ours_args[0] = {"activity_regularizer": regularizers.L1(0.01)}
        theirs_args[0] = {"activity_regularizer": keras.regularizers.L1(0.01)}
    else:
        ours_args[1] = {"activity_regularizer": regularizers.L1L2(0.01, 0.02)}
        theirs_args[1] = {"activity_regularizer": keras.regularizers.L1L2(0.01, 0.02)}
    model = densekit.Sequential(
        [Input((6,)), Dense(8, "tanh", **ours_args.get(0, {})), Dense(3, **ours_args.get(1, {}))]
    )
    twin = keras_twin(keras, model, theirs_args)
    ours, theirs = train_both(keras, model, twin, x, y)
    assert_same_run(keras, model, twin, ours, theirs, x, y)


def test_regularized_frozen_layer_is_not_penalised_like_keras(keras):
    # Keras counts the regularizers of trainable weights only; activity penalties stay
    x, y = regression_data(seed=3)
    model = densekit.Sequential(
        [
            Input((6,)),
            Dense(8, "tanh", kernel_regularizer="l2", activity_regularizer="l1"),
            Dense(3),
        ]
    )
    model.layers[0].trainable = False
    twin = keras_twin(keras, model, {0: {"kernel_regularizer": "l2", "activity_regularizer": "l1"}})
    ours, theirs = train_both(keras, model, twin, x, y)
    assert_same_run(keras, model, twin, ours, theirs, x, y)


def test_constraints_train_like_keras(keras):
    x, y = regression_data(seed=4)
    model = densekit.Sequential(
        [
            Input((6,)),
            Dense(8, "tanh", kernel_constraint=constraints.MaxNorm(0.6), bias_constraint="non_neg"),
            Dense(5, "relu", kernel_constraint=constraints.UnitNorm(axis=0)),
            Dense(3, kernel_constraint=constraints.MaxNorm(1.5, axis=[0, 1])),
        ]
    )
    twin = keras_twin(
        keras,
        model,
        {
            0: {
                "kernel_constraint": keras.constraints.MaxNorm(0.6),
                "bias_constraint": keras.constraints.NonNeg(),
            },
            1: {"kernel_constraint": keras.constraints.UnitNorm(axis=0)},
            2: {"kernel_constraint": keras.constraints.MaxNorm(1.5, axis=[0, 1])},
        },
    )
    ours, theirs = train_both(keras, model, twin, x, y, lr=0.2)
    assert_same_run(keras, model, twin, ours, theirs, x, y)
    assert np.all(np.linalg.norm(model.layers[0].kernel, axis=0) <= 0.6 + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(model.layers[1].kernel, axis=0), 1.0, rtol=1e-5)


def test_initializers_match_keras_formulas(keras):
    for gain, shape in [(1.0, (5, 5)), (2.5, (4, 7)), (0.5, (9, 3))]:
        ours = initializers.Identity(gain)(shape)
        theirs = keras.initializers.Identity(gain)(shape)
        np.testing.assert_array_equal(ours, np.asarray(theirs))
    config = keras.initializers.Orthogonal(gain=1.5, seed=3).get_config()
    assert initializers.Orthogonal(gain=1.5, seed=3).get_config() == config
    config = keras.initializers.TruncatedNormal(0.5, 0.2, seed=1).get_config()
    assert initializers.TruncatedNormal(0.5, 0.2, seed=1).get_config() == config
    # (Keras 3's Identity.get_config forgets its gain; densekit's keeps it)
    assert initializers.Identity(2.0).get_config() == {"gain": 2.0}
    # the same statistics as Keras's own draws
    ours = initializers.TruncatedNormal(0.5, 0.2, seed=1)((400, 300))
    theirs = np.asarray(keras.initializers.TruncatedNormal(0.5, 0.2, seed=1)((400, 300)))
    assert abs(ours.std() - theirs.std()) < 0.01 * 0.2
    assert abs(ours.mean() - theirs.mean()) < 0.005
    for shape in [(6, 4), (4, 6)]:
        q = np.asarray(keras.initializers.Orthogonal(gain=1.5, seed=0)(shape), np.float64)
        ours = initializers.Orthogonal(gain=1.5, seed=0)(shape, "float64")
        small = min(shape)
        gram = (lambda a: a.T @ a) if shape[0] >= shape[1] else (lambda a: a @ a.T)
        np.testing.assert_allclose(gram(q), 2.25 * np.eye(small), atol=1e-5)
        np.testing.assert_allclose(gram(ours), 2.25 * np.eye(small), atol=1e-12)


# -- initializers --------------------------------------------------------------------------


def test_truncated_normal_statistics_and_seeding():
    init = initializers.get("truncated_normal")
    assert isinstance(init, initializers.TruncatedNormal) and init.stddev == 0.05
    values = initializers.TruncatedNormal(mean=1.0, stddev=0.5, seed=7)((300, 400), "float64")
    assert np.all(np.abs(values - 1.0) <= 2 * 0.5)  # redrawn beyond two standard deviations
    assert abs(values.mean() - 1.0) < 0.005
    # no rescaling (Keras's definition): the std of a unit normal truncated at +-2
    assert abs(values.std() / 0.5 - 0.87962566103423978) < 0.005
    again = initializers.TruncatedNormal(mean=1.0, stddev=0.5, seed=7)((300, 400), "float64")
    np.testing.assert_array_equal(values, again)
    float32 = initializers.TruncatedNormal(mean=1.0, stddev=0.5, seed=7)((300, 400))
    assert float32.dtype == np.float32
    np.testing.assert_array_equal(float32, values.astype(np.float32))
    densekit.set_random_seed(3)
    first = initializers.TruncatedNormal()((5, 4))
    densekit.set_random_seed(3)
    np.testing.assert_array_equal(first, initializers.TruncatedNormal()((5, 4)))
    with pytest.raises(ValueError, match="stddev"):
        initializers.TruncatedNormal(stddev=0.0)


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (5, 5), (1, 4), (4, 1), (2, 3, 4)])
def test_orthogonal_is_keras_formula(shape):
    init = initializers.Orthogonal(gain=0.7, seed=11)
    values = init(shape, "float64")
    # the formula itself, on the same draw
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    normal = np.random.default_rng(11).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(normal)
    q = q * np.sign(np.diag(r))
    expected = 0.7 * (q.T if rows < cols else q).reshape(shape)
    np.testing.assert_array_equal(values, expected)
    flat = values.reshape(rows, cols)
    gram = flat.T @ flat if rows >= cols else flat @ flat.T
    np.testing.assert_allclose(gram, 0.49 * np.eye(min(rows, cols)), atol=1e-12)
    np.testing.assert_array_equal(values, initializers.Orthogonal(0.7, seed=11)(shape, "float64"))
    assert initializers.get("orthogonal").gain == 1.0
    assert initializers.get("OrthogonalInitializer").get_config() == {"gain": 1.0, "seed": None}


def test_orthogonal_and_identity_refuse_other_ranks():
    with pytest.raises(ValueError, match="two or more"):
        initializers.Orthogonal()((5,))
    with pytest.raises(ValueError, match="2-D"):
        initializers.Identity()((2, 2, 2))
    with pytest.raises(ValueError, match="gain"):
        initializers.Identity(float("nan"))


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3)])
def test_identity_is_scaled_eye(shape):
    values = initializers.get({"class_name": "Identity", "config": {"gain": 3.0}})(shape)
    np.testing.assert_array_equal(values, 3.0 * np.eye(*shape, dtype=np.float32))
    model = densekit.Sequential([Input((4,)), Dense(4, kernel_initializer="identity")])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(model.predict(x), x)  # identity kernel, zero bias


@pytest.mark.parametrize(
    "init",
    [
        initializers.TruncatedNormal(0.1, 0.3, seed=2),
        initializers.Orthogonal(1.5, seed=4),
        initializers.Identity(0.5),
    ],
)
def test_new_initializers_serialize(init):
    again = initializers.deserialize(initializers.serialize(init))
    assert type(again) is type(init) and again.get_config() == init.get_config()
    np.testing.assert_array_equal(again((6, 5)), init((6, 5)))


# -- regularizers -------------------------------------------------------------------------


def test_regularizer_values_and_names():
    w = np.array([[1.5, -2.0], [0.0, 0.25]])
    assert regularizers.L1(0.1)(w) == pytest.approx(0.1 * 3.75)
    assert regularizers.L2(0.1)(w) == pytest.approx(0.1 * (2.25 + 4 + 0.0625))
    assert regularizers.L1L2(0.1, 0.2)(w) == pytest.approx(0.375 + 0.2 * 6.3125)
    assert regularizers.get("l1").get_config() == {"l1": 0.01}
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.0, "l2": 0.0}
    assert not regularizers.get("l1_l2").active
    assert isinstance(regularizers.get("L1L2"), regularizers.L1L2)
    for r in [regularizers.L1(0.3), regularizers.L1L2(0.1, 0.2), regularizers.L2(0.4)]:
        again = regularizers.deserialize(regularizers.serialize(r))
        assert type(again) is type(r) and again.get_config() == r.get_config()
    with pytest.raises(ValueError, match="l1"):
        regularizers.L1(-1.0)
    with pytest.raises(ValueError, match="bias_regularizer"):
        Dense(3, bias_regularizer="l3")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bound_regularizer_penalty_and_gradient(dtype):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(13, 7)).astype(dtype)
    reg = regularizers.L1L2(0.03, 0.2)
    grad = rng.normal(size=x.shape).astype(dtype)
    start = grad.copy()
    scratch = np.empty_like(x)
    penalty = reg.bind(x, grad, scratch, scale=0.25)()
    x64 = x.astype(np.float64)
    assert penalty == pytest.approx(0.25 * reg(x64), rel=1e-5 if dtype == np.float32 else 1e-12)
    expected = start + 0.25 * (0.03 * np.sign(x64) + 2 * 0.2 * x64)
    np.testing.assert_allclose(grad, expected, rtol=1e-6 if dtype == np.float32 else 1e-13)
    assert reg.bind(x, grad, scratch, penalty=False)() == 0.0
    with pytest.raises(ValueError, match="scratch"):
        reg.bind(x, grad)


def finite_difference_check(model, x, y, atol=1e-6):
    """The model's gradients (float64) against central differences of its training loss."""
    state = model.training_state
    _, grads = state.batch_gradients(x, y)
    for weight, grad in zip(model.trainable_weights, grads, strict=True):
        flat, numeric = weight.reshape(-1), np.zeros(weight.size)
        for i in range(weight.size):
            keep = flat[i]
            flat[i] = keep + 1e-6
            up = state.batch_gradients(x, y)[0]
            flat[i] = keep - 1e-6
            down = state.batch_gradients(x, y)[0]
            flat[i] = keep
            numeric[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grad.reshape(-1), numeric, atol=atol, rtol=1e-5)


def test_regularizer_gradients_match_finite_differences():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 2))
    model = densekit.Sequential(
        [
            Input((4,)),
            Dense(
                5,
                "tanh",
                kernel_regularizer=regularizers.L1L2(0.02, 0.03),
                bias_regularizer=regularizers.L1(0.05),
                activity_regularizer=regularizers.L1L2(0.04, 0.06),
                bias_initializer=initializers.RandomNormal(seed=1),
            ),
            Dropout(0.0),
            Dense(2, activity_regularizer="l2", bias_regularizer="l1_l2"),
        ],
        dtype="float64",
    )
    model.compile("sgd", "mse")
    finite_difference_check(model, x, y)


def test_activity_penalty_is_per_batch_mean_and_in_evaluate():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    reg = regularizers.L1L2(0.1, 0.2)
    model = densekit.Sequential(
        [Input((3,)), Dense(4, "relu", activity_regularizer=reg), Dense(2)], dtype="float64"
    )
    model.compile("sgd", "mse")
    hidden = np.maximum(x @ model.layers[0].kernel + model.layers[0].bias, 0)
    out = hidden @ model.layers[1].kernel + model.layers[1].bias
    mse = np.mean((out - y) ** 2)
    expected = mse + reg(hidden) / 10
    assert model.evaluate(x, y, batch_size=10, verbose=0) == pytest.approx(expected, rel=1e-12)
    halves = [
        np.mean((out[s] - y[s]) ** 2) + reg(hidden[s]) / 5 for s in (slice(0, 5), slice(5, 10))
    ]
    assert model.evaluate(x, y, batch_size=5, verbose=0) == pytest.approx(np.mean(halves))
    loss, _ = model.training_state.batch_gradients(x, y)
    assert loss == pytest.approx(expected, rel=1e-12)


def test_activity_regularizer_blocks_activation_absorption_and_is_refused_on_fused_output():
    rng = np.random.default_rng(8)
    x, labels = rng.normal(size=(6, 3)), rng.integers(0, 3, 6)
    # an Activation layer after a penalised Dense stays a separate op: the penalty is on
    # the Dense output, before the activation
    reg = regularizers.L2(0.5)
    model = densekit.Sequential(
        [Input((3,)), Dense(4, activity_regularizer=reg), Activation("tanh"), Dense(3)],
        dtype="float64",
    )
    logits_loss = densekit.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("sgd", logits_loss)
    logits = x @ model.layers[0].kernel
    got = model.evaluate(x, labels, verbose=0)
    plain = densekit.Sequential(
        [Input((3,)), Dense(4), Activation("tanh"), Dense(3)], dtype="float64"
    )
    plain.set_weights(model.get_weights())
    plain.compile("sgd", logits_loss)
    assert got == pytest.approx(plain.evaluate(x, labels, verbose=0) + reg(logits) / 6)
    fused = densekit.Sequential([Input((3,)), Dense(3, "softmax", activity_regularizer="l1")])
    fused.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="activity_regularizer"):
        fused.evaluate(x, labels, verbose=0)


# -- constraints ---------------------------------------------------------------------------


def keras_max_norm(w, max_value, axis):
    norms = np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))
    return w * (np.clip(norms, 0, max_value) / (1e-7 + norms))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1, [0, 1]])
def test_norm_constraints_are_keras_formulas(dtype, axis):
    rng = np.random.default_rng(9)
    w = rng.normal(size=(6, 5)).astype(dtype)
    reduce_axis = tuple(axis) if isinstance(axis, list) else axis
    tol = {"rtol": 1e-6 if dtype == np.float32 else 1e-14}
    expected = keras_max_norm(w.astype(np.float64), 1.2, reduce_axis)
    np.testing.assert_allclose(constraints.MaxNorm(1.2, axis)(w), expected, **tol)
    norms = np.sqrt(np.sum(np.square(w.astype(np.float64)), axis=reduce_axis, keepdims=True))
    np.testing.assert_allclose(constraints.UnitNorm(axis)(w), w / (1e-7 + norms), **tol)
    target = w.copy()
    constraints.MaxNorm(1.2, axis).bind(target)()  # in place, into the same memory
    np.testing.assert_allclose(target, expected, **tol)
    assert target.dtype == dtype


def test_non_neg_and_config():
    w = np.array([[-1.0, 2.0], [0.5, -0.0]], np.float32)
    np.testing.assert_array_equal(constraints.NonNeg()(w), [[0.0, 2.0], [0.5, 0.0]])
    for c in [constraints.MaxNorm(3, axis=1), constraints.UnitNorm([0, 1]), constraints.NonNeg()]:
        again = constraints.deserialize(constraints.serialize(c))
        assert type(again) is type(c) and again.get_config() == c.get_config()
    assert constraints.get("max_norm").get_config() == {"max_value": 2, "axis": 0}
    assert constraints.get("unit_norm").get_config() == {"axis": 0}
    with pytest.raises(ValueError, match="max_value"):
        constraints.MaxNorm(0)
    with pytest.raises(ValueError, match="axis"):
        constraints.UnitNorm(axis=2).bind(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="kernel_constraint"):
        Dense(2, kernel_constraint="positive")


def test_constraints_hold_after_every_step():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(40, 5)), 10 * rng.normal(size=(40, 2))
    model = densekit.Sequential(
        [
            Input((5,)),
            Dense(6, kernel_constraint=constraints.MaxNorm(0.3), bias_constraint="non_neg"),
            Dense(2, kernel_constraint="unit_norm"),
        ],
        dtype="float64",
    )
    model.compile(densekit.optimizers.Adam(0.1), "mse")

    class Check(densekit.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert np.all(np.linalg.norm(model.layers[0].kernel, axis=0) <= 0.3 + 1e-12)
            assert np.all(model.layers[0].bias >= 0)
            norms = np.linalg.norm(model.layers[1].kernel, axis=0)
            np.testing.assert_allclose(norms, 1, rtol=1e-6)  # 1 / (1 + 1e-7), Keras's

    model.fit(x, y, batch_size=7, epochs=2, verbose=0, callbacks=[Check()])


# -- frozen layers -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_backward_need_dw_false_skips_dw_only(dtype):
    rng = np.random.default_rng(12)
    x, w = rng.normal(size=(17, 13)).astype(dtype), rng.normal(size=(13, 5)).astype(dtype)
    dy, y = rng.normal(size=(17, 5)).astype(dtype), np.tanh(rng.normal(size=(17, 5))).astype(dtype)
    full = kernels.dense_backward(dy, x, w, y=y, activation="tanh")
    for threads in (1, 2, 3):
        dx, dw, db = kernels.dense_backward(
            dy, x, w, y=y, activation="tanh", need_dw=False, num_threads=threads
        )
        assert dw is None
        np.testing.assert_array_equal(dx, full[0])
        np.testing.assert_array_equal(db, full[2])
    dx, dw, db = kernels.dense_backward(dy, x, w, need_dw=False, need_db=False)
    assert dw is None and db is None
    np.testing.assert_array_equal(dx, kernels.dense_backward(dy, x, w)[0])
    with pytest.raises(ValueError, match="dw_out"):
        kernels.dense_backward(dy, x, w, need_dw=False, dw_out=np.empty_like(w))


def frozen_model(optimizer="adam"):
    model = densekit.Sequential(
        [Input((5,)), Dense(7, "relu", name="a"), Dense(6, "tanh", name="b"), Dense(2, name="c")],
        dtype="float64",
    )
    model.get_layer("b").trainable = False
    model.compile(optimizer, "mse")
    return model


def test_frozen_layer_backward_computes_no_weight_gradients():
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(8, 5)), rng.normal(size=(8, 2))
    model = frozen_model()
    state = model.training_state
    plan = state.load_batch(*state.dataset(x, y))
    options = [call.keywords for call in plan.backward]
    assert [o.get("need_dw", True) for o in options] == [True, False, True]
    assert [o.get("need_db", True) for o in options] == [True, False, True]
    assert state.gradients.size == 5 * 7 + 7 + 6 * 2 + 2  # frozen weights have none
    assert state.trainable_parameters.size == state.gradients.size
    # a frozen first layer: no backward call reaches it at all
    model.get_layer("a").trainable = False
    model.get_layer("b").trainable = True
    model.compile("adam", "mse")
    plan = model.training_state.load_batch(*model.training_state.dataset(x, y))
    assert len(plan.backward) == 2
    assert plan.backward[-1].keywords["need_dx"] is False
    finite_difference_check(model, x, y)


def test_frozen_weights_stay_bitwise_with_decay_and_momentum():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 2))
    model = frozen_model(densekit.optimizers.AdamW(0.05, weight_decay=0.1))
    frozen = [w.copy() for w in model.get_layer("b").weights]
    trained = [w.copy() for w in model.get_layer("a").weights]
    model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    for kept, now in zip(frozen, model.get_layer("b").weights):
        np.testing.assert_array_equal(kept, now)
    assert not np.array_equal(trained[0], model.get_layer("a").kernel)
    iterations, variables = model.optimizer_state()
    assert iterations == 12
    assert all(v.size == sum(w.size for w in model.trainable_weights) for v in variables.values())


def test_trainable_change_takes_effect_at_compile():
    rng = np.random.default_rng(15)
    x, y = rng.normal(size=(16, 5)), rng.normal(size=(16, 2))
    model = frozen_model("sgd")
    model.fit(x, y, epochs=1, verbose=0)
    model.get_layer("b").trainable = True  # after compile: no effect yet (as Keras)
    kept = model.get_layer("b").kernel.copy()
    model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("b").kernel, kept)
    weights = model.get_weights()
    model.compile("sgd", "mse")  # now it trains; the weights carry over
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(model.get_layer("b").kernel, kept)
    model.trainable = False
    assert all(not layer.trainable for layer in model.layers)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no weights to train"):
        model.fit(x, y, verbose=0)


def test_trainable_and_non_trainable_weights_are_live_views():
    model = frozen_model()
    b = model.get_layer("b")
    assert [w.shape for w in model.trainable_weights] == [(5, 7), (7,), (6, 2), (2,)]
    assert [w.shape for w in model.non_trainable_weights] == [(7, 6), (6,)]
    assert b.trainable_weights == [] and len(b.non_trainable_weights) == 2
    assert [w.shape for w in model.weights] == [(5, 7), (7,), (7, 6), (6,), (6, 2), (2,)]
    model.non_trainable_weights[0][0, 0] = 42.0
    assert b.kernel[0, 0] == 42.0 and model.get_weights()[2][0, 0] == 42.0
    with pytest.raises(TypeError, match="trainable"):
        b.trainable = "no"


def test_frozen_model_saves_and_resumes_bitwise(tmp_path):
    rng = np.random.default_rng(16)
    x, y = rng.normal(size=(24, 5)), rng.normal(size=(24, 2))
    model = frozen_model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=1)
    path = tmp_path / "frozen.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    assert loaded.get_layer("b").trainable is False
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=2)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=2)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- model API -------------------------------------------------------------------------------


def test_get_layer_by_name_and_index():
    model = frozen_model()
    assert model.get_layer("c") is model.layers[2]
    assert model.get_layer(index=0).name == "a" and model.get_layer(index=-1).name == "c"
    with pytest.raises(ValueError, match="no layer 'zz'"):
        model.get_layer("zz")
    with pytest.raises(ValueError, match="index"):
        model.get_layer(index=3)
    with pytest.raises(ValueError, match="only"):
        model.get_layer("a", 0)
    with pytest.raises(ValueError, match="either"):
        model.get_layer()


def test_input_and_output_shape():
    model = densekit.Sequential([Dense(4), Dense(3)])
    with pytest.raises(AttributeError, match="input shape"):
        _ = model.input_shape
    with pytest.raises(AttributeError, match="output shape"):
        _ = model.output_shape
    model.build((None, 9))
    assert model.input_shape == (None, 9) and model.output_shape == (None, 3)
    declared = densekit.Sequential([Input((5,))])
    assert declared.input_shape == (None, 5)


def test_clone_model_has_same_architecture_and_fresh_weights():
    model = densekit.Sequential(
        [
            Input((5,)),
            Dense(6, "relu", kernel_regularizer="l1", kernel_constraint="max_norm", name="x"),
            Dense(3, kernel_initializer=initializers.GlorotNormal(seed=4), trainable=False),
        ]
    )
    clone = densekit.models.clone_model(model)
    assert clone.built and not clone.compiled
    assert clone.get_config() == model.get_config()
    assert not np.array_equal(clone.weights[0], model.weights[0])  # drawn again
    np.testing.assert_array_equal(clone.weights[2], model.weights[2])  # seeded: the same
    assert clone.layers[0] is not model.layers[0]
    lazy = densekit.models.clone_model(densekit.Sequential([Dense(2)]))
    assert not lazy.built
    renamed = densekit.models.clone_model(
        model,
        clone_function=lambda layer: type(layer).from_config(
            {**layer.get_config(), "name": layer.name + "_copy"}
        ),
    )
    assert [layer.name for layer in renamed.layers] == [
        layer.name + "_copy" for layer in model.layers
    ]
    with pytest.raises(ValueError, match="two models"):
        densekit.models.clone_model(model, clone_function=lambda layer: layer)


def test_summary_columns_and_counts():
    model = frozen_model()
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[0] == 'Model: "' + model.name + '"'
    assert max(len(line) for line in lines) == 88
    text = "\n".join(lines)
    assert " Total params: 104 (832.00 B)" in text  # float64 weights
    assert " Trainable params: 56 (448.00 B)" in text
    assert " Non-trainable params: 48 (384.00 B)" in text
    assert "Optimizer params" not in text
    header = next(line for line in lines if line.startswith(" Layer (type)"))
    assert header.index("Output Shape") == int(0.45 * 88) + 1 and header.endswith("Param #")
    lines = []
    model.summary(
        line_length=60, positions=[30, 50, 60], print_fn=lines.append, show_trainable=False
    )
    header = next(line for line in lines if line.startswith(" Layer (type)"))
    assert header.index("Output Shape") == 31 and max(len(line) for line in lines) == 60
    lines = []
    model.summary(print_fn=lines.append, show_trainable=True)
    row = next(line for line in lines if line.startswith(" b (Dense)"))
    assert row.rstrip().endswith("N")
    with pytest.raises(ValueError, match="positions"):
        model.summary(positions=[0.5, 0.6], print_fn=lines.append)


def test_dense_config_round_trip_with_everything():
    layer = Dense(
        4,
        "relu",
        kernel_initializer=initializers.Orthogonal(2.0, seed=1),
        bias_initializer=initializers.TruncatedNormal(seed=2),
        kernel_regularizer=regularizers.L1L2(0.1, 0.2),
        bias_regularizer=regularizers.L1(0.3),
        activity_regularizer=regularizers.L2(0.4),
        kernel_constraint=constraints.MaxNorm(3.0, axis=[0]),
        bias_constraint=constraints.NonNeg(),
        trainable=False,
        name="everything",
    )
    config = densekit.layers.serialize(layer)
    again = densekit.layers.deserialize(config)
    assert densekit.layers.serialize(again) == config
    assert again.trainable is False
    assert isinstance(again.bias_constraint, constraints.NonNeg)
    assert again.activity_regularizer.get_config() == {"l2": 0.4}


def test_hogwild_workers_leave_frozen_weights_alone_and_constrain():
    rng = np.random.default_rng(17)
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 2))
    model = densekit.Sequential(
        [
            Input((5,)),
            Dense(7, "relu", kernel_constraint=constraints.MaxNorm(0.5), name="a"),
            Dense(6, "tanh", trainable=False, kernel_regularizer="l2", name="b"),
            Dense(2, kernel_regularizer="l1", name="c"),
        ],
        dtype="float64",
    )
    model.compile(densekit.optimizers.Adam(0.05), "mse")
    frozen = [w.copy() for w in model.get_layer("b").weights]
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, workers=2, strategy="hogwild")
    for kept, now in zip(frozen, model.get_layer("b").weights):
        np.testing.assert_array_equal(kept, now)
    assert np.all(np.linalg.norm(model.get_layer("a").kernel, axis=0) <= 0.5 + 1e-12)


def test_model_trainable_flag_round_trips_and_unbuilt_summary():
    model = densekit.Sequential([Input((3,)), Dense(2), Dense(1)])
    model.trainable = False
    again = densekit.Sequential.from_config(model.get_config())
    assert again.trainable is False and not any(layer.trainable for layer in again.layers)
    assert again.trainable_weights == [] and len(again.non_trainable_weights) == 4
    lines = []
    densekit.Sequential([Dense(2)], name="lazy").summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "0 (unbuilt)" in text and " Total params: 0 (0.00 B)" in text


def test_model_file_keeps_regularizers_constraints_and_initializers(tmp_path):
    rng = np.random.default_rng(18)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    model = densekit.Sequential(
        [
            Input((4,)),
            Dense(
                5,
                "tanh",
                kernel_initializer=initializers.Orthogonal(1.2, seed=1),
                bias_initializer=initializers.TruncatedNormal(seed=2),
                kernel_regularizer=regularizers.L1L2(0.01, 0.02),
                bias_regularizer="l1",
                activity_regularizer=regularizers.L2(0.03),
                kernel_constraint=constraints.MaxNorm(0.8, axis=[0]),
                bias_constraint="non_neg",
            ),
            Dense(2, kernel_initializer="identity", kernel_constraint="unit_norm"),
        ],
        dtype="float64",
    )
    model.compile(densekit.optimizers.SGD(0.1, momentum=0.9), "mse")
    model.fit(x, y, batch_size=6, epochs=1, verbose=0, seed=0)
    path = tmp_path / "everything.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=6, epochs=1, verbose=0, seed=1)
    loaded.fit(x, y, batch_size=6, epochs=1, verbose=0, seed=1)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_plan_load_reads_a_contiguous_batch_in_place_and_copies_other_layouts():
    # a C-contiguous x is read where it is (the first op's calls bound to it); other layouts
    # are copied into the plan's buffer, exactly, and the buffer's calls are used
    rng = np.random.default_rng(15)
    x, y = rng.normal(size=(37, 5)), rng.normal(size=(37, 2))
    model = frozen_model()
    state = model.training_state
    plan = state.load_batch(*state.dataset(x, y), in_place=True)
    np.testing.assert_array_equal(plan.y, y)
    assert plan.forward != plan.buffer_calls[0]
    assert plan.forward[1:] == plan.buffer_calls[0][1:]
    # not asked (a batch a prefetching source may fill again), or another layout: copied
    for layout, in_place in (
        (x, False),
        (np.asfortranarray(x), True),
        (x[::-1].copy()[::-1], True),
    ):
        plan.x.fill(np.nan)
        plan.load(layout, y, in_place=in_place)
        np.testing.assert_array_equal(plan.x, x)
        assert (plan.forward, plan.backward) == plan.buffer_calls
    twin = frozen_model()
    twin.set_weights(model.get_weights())
    kept = x.copy()
    assert model.train_on_batch(np.asfortranarray(x), y) == twin.train_on_batch(x, y)
    np.testing.assert_array_equal(x, kept)  # read, never written
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy", [None, "mixed_bfloat16"])
@pytest.mark.parametrize("first", ["dense", "dropout", "batch_norm", "activation"])
def test_a_batch_read_in_place_trains_as_a_copied_one(first, policy):
    """train_on_batch and evaluate on a C-contiguous x (read in place) give the bits of the
    same batch in another layout (copied), whatever the first layer, and leave x as it was."""
    rng = np.random.default_rng(16)
    x = rng.normal(size=(29, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=29)

    def model():
        head = {
            "dense": [],
            "dropout": [densekit.layers.Dropout(0.25, seed=3)],
            "batch_norm": [densekit.layers.BatchNormalization()],
            "activation": [densekit.layers.Activation("tanh")],
        }[first]
        m = densekit.Sequential(
            [
                densekit.layers.Input((6,)),
                *head,
                Dense(7, "relu", dtype=policy),
                Dense(3, "softmax", dtype=policy),
            ]
        )
        m.compile(densekit.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return m

    direct, copied = model(), model()
    copied.set_weights(direct.get_weights())
    kept = x.copy()
    for _ in range(3):
        a = direct.train_on_batch(x, y)
        b = copied.train_on_batch(np.asfortranarray(x), y)
        assert a == b
    np.testing.assert_array_equal(x, kept)
    for a, b in zip(direct.get_weights(), copied.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert direct.evaluate(x, y, verbose=0) == copied.evaluate(np.asfortranarray(x), y, verbose=0)
