"""Sequential models: lockstep training against the NumPy reference MLP, fused losses, every
activation, loss, optimizer and metric, fit/evaluate/predict semantics, input validation, and
a training step that allocates nothing."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import densekit
from densekit import kernels, layers, losses, metrics, optimizers, schedules
from densekit.layers import Activation, Dense, Dropout, Input

from . import reference_mlp

# every elementwise activation of the registry (softmax is tested as an output layer)
KERAS_ACTIVATIONS = [name for name in kernels.ACTIVATIONS if name != "softmax"]


def reference_layers(model):
    """The model's Dense layers as reference (kernel, bias, activation, alpha) tuples; a
    following Activation layer is folded into the Dense before it."""
    result = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            act = layer.activation
            result.append(
                [
                    layer.kernel.astype(np.float64),
                    None if layer.bias is None else layer.bias.astype(np.float64),
                    act.name,
                    act.alpha,
                ]
            )
        elif isinstance(layer, Activation) and layer.activation.name != "linear":
            assert result[-1][2] == "linear"
            result[-1][2], result[-1][3] = layer.activation.name, layer.activation.alpha
    return [tuple(r) for r in result]


def flat(arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def classification_data(rng, n=96, features=12, classes=4):
    x = rng.standard_normal((n, features))
    y = rng.integers(0, classes, n)
    return x, y


def mlp(
    features,
    hidden,
    outputs,
    activation="relu",
    out_activation="softmax",
    dtype="float64",
    seed=0,
    **dense,
):
    densekit.set_random_seed(seed)
    stack = [Input((features,))]
    stack += [Dense(units, activation, **dense) for units in hidden]
    stack.append(Dense(outputs, out_activation, **dense))
    return densekit.Sequential(stack, dtype=dtype)


# -- lockstep: 100 Adam steps against the reference ---------------------------------------------

LOCKSTEP_CASES = {
    "softmax-ce": dict(
        hidden=[32, 16], activation="relu", out="softmax", loss="sparse_categorical_crossentropy"
    ),
    "tanh-mse-l2-clip": dict(
        hidden=[24], activation="tanh", out="linear", loss="mse", l2=1e-3, clip=0.5
    ),
    "gelu-huber-weighted": dict(
        hidden=[16, 16], activation="gelu", out="linear", loss="huber", weighted=True
    ),
}


@pytest.mark.parametrize("case", list(LOCKSTEP_CASES))
def test_100_adam_steps_match_the_reference_in_float64(case):
    spec = LOCKSTEP_CASES[case]
    rng = np.random.default_rng(1)
    features, outputs, batch = 10, 5, 16
    regularizer = densekit.regularizers.L2(spec["l2"]) if spec.get("l2") else None
    model = mlp(
        features,
        spec["hidden"],
        outputs,
        spec["activation"],
        spec["out"],
        kernel_regularizer=regularizer,
    )
    optimizer = optimizers.Adam(learning_rate=3e-3, epsilon=1e-8, global_clipnorm=spec.get("clip"))
    model.compile(optimizer, spec["loss"])
    ref = [
        tuple(np.array(v) if isinstance(v, np.ndarray) else v for v in layer)
        for layer in reference_layers(model)
    ]
    params = [p for w, b, _, _ in ref for p in (w, b) if p is not None]
    ref_adam = reference_mlp.Adam(params, lr=3e-3, eps=1e-8)
    factors = [spec.get("l2", 0.0)] * len(ref)

    for _ in range(100):
        x = rng.standard_normal((batch, features))
        if spec["loss"] == "sparse_categorical_crossentropy":
            y = rng.integers(0, outputs, batch)
        else:
            y = rng.standard_normal((batch, outputs))
        weights = rng.uniform(0, 2, batch) if spec.get("weighted") else None
        loss = model.train_on_batch(x, y, sample_weight=weights)

        preacts, acts = reference_mlp.forward(ref, x)
        name = "huber" if spec["loss"] == "huber" else spec["loss"]
        ref_loss, doutput = reference_mlp.loss_and_grad(
            name, preacts[-1] if spec["out"] == "softmax" else acts[-1], y, weights
        )
        ref_loss += reference_mlp.l2_penalty(ref, factors)
        grads = reference_mlp.backward(
            [
                (w, b, "linear" if i == len(ref) - 1 and spec["out"] == "softmax" else a, al)
                for i, (w, b, a, al) in enumerate(ref)
            ],
            preacts,
            acts,
            doutput,
        )
        reference_mlp.add_l2_grads(ref, grads, factors)
        if spec.get("clip"):
            grads = reference_mlp.clip_by_global_norm(grads, spec["clip"])
        ref_adam.step(grads)

        assert relative_error(loss, ref_loss) < 1e-10
    for ours, theirs in zip(model.get_weights(), params):
        assert relative_error(ours, theirs) < 1e-10


# -- fused loss paths -----------------------------------------------------------------------------


def test_fused_softmax_cross_entropy_equals_the_separate_path():
    """Softmax output + SparseCategoricalCrossentropy(from_logits=False) trains on logits with
    the fused kernel; the separate path (softmax forward, CE gradient wrt probabilities, the
    softmax Jacobian in dense_backward) must give the same gradients."""
    rng = np.random.default_rng(2)
    x, y = classification_data(rng)
    model = mlp(12, [20], 4)
    model.compile("sgd", losses.SparseCategoricalCrossentropy())
    loss, fused = model.training_state.batch_gradients(x, y)

    (w1, b1), (w2, b2) = [(layer.kernel, layer.bias) for layer in model.layers]
    h = kernels.dense_forward(x, w1, b1, "relu")
    p = kernels.dense_forward(h, w2, b2, "softmax")
    n = len(y)
    dp = np.zeros_like(p)
    dp[np.arange(n), y] = -1.0 / (n * p[np.arange(n), y])
    dh, dw2, db2 = kernels.dense_backward(dp, h, w2, y=p, activation="softmax")
    _, dw1, db1 = kernels.dense_backward(dh, x, w1, y=h, activation="relu")
    separate = [dw1, db1, dw2, db2]
    assert math.isclose(loss, -np.mean(np.log(p[np.arange(n), y])), rel_tol=1e-12)
    for a, b in zip(fused, separate):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)

    # A linear Dense followed by Activation("softmax") is the same model.
    split = densekit.Sequential(
        [Input((12,)), Dense(20, "relu"), Dense(4), Activation("softmax")], dtype="float64"
    )
    split.set_weights(model.get_weights())
    split.compile("sgd", "sparse_categorical_crossentropy")
    _, grads = split.training_state.batch_gradients(x, y)
    for a, b in zip(grads, fused):
        np.testing.assert_array_equal(a, b)


def test_fused_sigmoid_binary_cross_entropy_equals_the_separate_path():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 6))
    y = rng.integers(0, 2, (64, 1)).astype(np.float64)
    model = mlp(6, [8], 1, activation="tanh", out_activation="sigmoid")
    model.compile("sgd", "binary_crossentropy")
    _, fused = model.training_state.batch_gradients(x, y)
    (w1, b1), (w2, b2) = [(layer.kernel, layer.bias) for layer in model.layers]
    h = kernels.dense_forward(x, w1, b1, "tanh")
    p = kernels.dense_forward(h, w2, b2, "sigmoid")
    dp = (p - y) / (p * (1 - p)) / len(y)
    dh, dw2, db2 = kernels.dense_backward(dp, h, w2, y=p, activation="sigmoid")
    _, dw1, db1 = kernels.dense_backward(dh, x, w1, y=h, activation="tanh")
    for a, b in zip(fused, [dw1, db1, dw2, db2]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-14)


def test_probability_losses_need_the_matching_output_activation():
    model = mlp(4, [3], 3, out_activation="linear")
    model.compile("sgd", losses.CategoricalCrossentropy(from_logits=False))
    with pytest.raises(ValueError, match="softmax"):
        model.fit(np.zeros((4, 4)), np.eye(3)[[0, 1, 2, 0]], verbose=0)
    model.compile("sgd", losses.CategoricalCrossentropy(from_logits=True))
    model.fit(np.zeros((4, 4)), np.eye(3)[[0, 1, 2, 0]], verbose=0)


# -- every activation and loss against the reference ---------------------------------------------


@pytest.mark.parametrize("activation", KERAS_ACTIVATIONS)
def test_gradients_of_every_activation_match_the_reference(activation):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 7))
    y = rng.standard_normal((20, 3))
    model = mlp(7, [9, 5], 3, activation=activation, out_activation="linear")
    model.compile("sgd", "mse")
    loss, grads = model.training_state.batch_gradients(x, y)
    ref = reference_layers(model)
    ref_loss, expected = reference_mlp.gradients(ref, x, "mse", y)
    assert math.isclose(loss, ref_loss, rel_tol=1e-12)
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    outputs = reference_mlp.forward(ref, x)[1][-1]
    np.testing.assert_allclose(model.predict(x), outputs, rtol=1e-12, atol=1e-13)


LOSS_CASES = [
    ("mse", losses.MeanSquaredError(), "linear", "dense"),
    ("mae", losses.MeanAbsoluteError(), "linear", "dense"),
    ("huber", losses.Huber(delta=0.7), "linear", "dense"),
    (
        "binary_crossentropy",
        losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
        "linear",
        "binary",
    ),
    ("binary_crossentropy", losses.BinaryCrossentropy(), "sigmoid", "binary"),
    (
        "categorical_crossentropy",
        losses.CategoricalCrossentropy(label_smoothing=0.2),
        "softmax",
        "onehot",
    ),
    (
        "sparse_categorical_crossentropy",
        losses.SparseCategoricalCrossentropy(from_logits=True),
        "linear",
        "labels",
    ),
]


@pytest.mark.parametrize(
    ("name", "loss", "out", "target"), LOSS_CASES, ids=lambda v: getattr(v, "name", str(v))
)
def test_every_loss_with_sample_weights_matches_the_reference(name, loss, out, target):
    rng = np.random.default_rng(5)
    n, classes = 30, 3
    x = rng.standard_normal((n, 5))
    y = {
        "dense": rng.standard_normal((n, classes)),
        "binary": rng.integers(0, 2, (n, classes)).astype(float),
        "onehot": np.eye(classes)[rng.integers(0, classes, n)],
        "labels": rng.integers(0, classes, n),
    }[target]
    weights = rng.uniform(0, 3, n)
    model = mlp(5, [6], classes, activation="elu", out_activation=out)
    model.compile("sgd", loss)
    value, grads = model.training_state.batch_gradients(x, y, sample_weight=weights)

    ref = reference_layers(model)
    fused = not loss.from_logits
    ref_train = [
        (w, b, "linear" if fused and i == len(ref) - 1 else a, al)
        for i, (w, b, a, al) in enumerate(ref)
    ]
    options = {"delta": loss.delta} if name == "huber" else {}
    if hasattr(loss, "label_smoothing"):
        options["label_smoothing"] = loss.label_smoothing
    ref_value, expected = reference_mlp.gradients(ref_train, x, name, y, weights, **options)
    assert math.isclose(value, ref_value, rel_tol=1e-11)
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    # evaluate reports the same weighted loss, and the loss object computes it standalone
    assert math.isclose(
        model.evaluate(x, y, sample_weight=weights, verbose=0), ref_value, rel_tol=1e-11
    )
    standalone = loss(y, model.predict(x), sample_weight=weights)
    assert math.isclose(standalone, ref_value, rel_tol=1e-5 if fused else 1e-11)


def test_losses_by_name():
    for name, cls in [
        ("mse", losses.MeanSquaredError),
        ("mean_absolute_error", losses.MeanAbsoluteError),
        ("huber", losses.Huber),
        ("binary_crossentropy", losses.BinaryCrossentropy),
        ("categorical_crossentropy", losses.CategoricalCrossentropy),
        ("SparseCategoricalCrossentropy", losses.SparseCategoricalCrossentropy),
        ("hinge", losses.Hinge),
        ("kld", losses.KLDivergence),
        ("CategoricalFocalCrossentropy", losses.CategoricalFocalCrossentropy),
    ]:
        assert type(losses.get(name)) is cls
    with pytest.raises(ValueError, match="loss: unknown loss 'hingle'"):
        losses.get("hingle")


def test_l2_regularizer_adds_penalty_and_gradient():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    model = mlp(
        4, [5], 2, out_activation="linear", kernel_regularizer=densekit.regularizers.L2(0.05)
    )
    model.compile("sgd", "mse")
    loss, grads = model.training_state.batch_gradients(x, y)
    ref = reference_layers(model)
    ref_loss, expected = reference_mlp.gradients(ref, x, "mse", y)
    reference_mlp.add_l2_grads(ref, expected, [0.05, 0.05])
    assert math.isclose(loss, ref_loss + reference_mlp.l2_penalty(ref, [0.05, 0.05]), rel_tol=1e-12)
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


# -- optimizers ------------------------------------------------------------------------------


OPTIMIZER_CASES = {
    "sgd": (lambda: optimizers.SGD(0.1), lambda p: reference_mlp.SGD(p, 0.1)),
    "sgd-momentum": (
        lambda: optimizers.SGD(0.05, momentum=0.9),
        lambda p: reference_mlp.SGD(p, 0.05, 0.9),
    ),
    "sgd-nesterov": (
        lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
        lambda p: reference_mlp.SGD(p, 0.05, 0.8, nesterov=True),
    ),
    "rmsprop": (lambda: optimizers.RMSprop(0.01), lambda p: reference_mlp.RMSprop(p, 0.01)),
    "rmsprop-centered-momentum": (
        lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
        lambda p: reference_mlp.RMSprop(p, 0.01, momentum=0.5, centered=True),
    ),
    "adamw": (
        lambda: optimizers.AdamW(0.01, weight_decay=0.1),
        lambda p: reference_mlp.Adam(p, 0.01, eps=1e-7, weight_decay=0.1),
    ),
    "adam-exponential-decay": (
        lambda: optimizers.Adam(schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.5)),
        lambda p: reference_mlp.Adam(p, eps=1e-7),
    ),
}


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizers_follow_their_update_rules(case):
    make, make_reference = OPTIMIZER_CASES[case]
    rng = np.random.default_rng(7)
    model = mlp(6, [7], 3, activation="tanh", out_activation="linear")
    optimizer = make()
    model.compile(optimizer, "mse")
    ref = [
        tuple(np.array(v) if isinstance(v, np.ndarray) else v for v in layer)
        for layer in reference_layers(model)
    ]
    params = [p for w, b, _, _ in ref for p in (w, b)]
    reference_optimizer = make_reference(params)
    for step in range(12):
        x, y = rng.standard_normal((8, 6)), rng.standard_normal((8, 3))
        rate = optimizer.learning_rate
        model.train_on_batch(x, y)
        preacts, acts = reference_mlp.forward(ref, x)
        _, dout = reference_mlp.loss_and_grad("mse", acts[-1], y)
        lr = 0.02 * 0.5 ** (step / 3) if "decay" in case else None
        if lr is not None:
            assert math.isclose(rate, lr, rel_tol=1e-15)
        reference_optimizer.step(reference_mlp.backward(ref, preacts, acts, dout), lr)
    assert optimizer.iterations == 12
    for ours, theirs in zip(model.get_weights(), params):
        assert relative_error(ours, theirs) < 1e-10


@pytest.mark.parametrize(
    "name, state",
    [
        ("nadam", ["m", "v"]),
        ("adamax", ["m", "u"]),
        ("adagrad", ["accumulator"]),
        ("lion", ["m"]),
    ],
)
def test_new_optimizers_by_name_have_keras_defaults(name, state):
    optimizer = optimizers.get(name)
    assert optimizer.learning_rate == 0.001 and optimizer.name == name
    assert optimizer.state_names() == state
    assert optimizers.deserialize(optimizers.serialize(optimizer)).get_config() == (
        optimizer.get_config()
    )


@pytest.mark.parametrize(
    "options, error, name",
    [
        ({"clipnorm": 1.0, "clipvalue": 1.0}, ValueError, "clipnorm, global_clipnorm, clipvalue"),
        ({"clipvalue": 0.0}, ValueError, "clipvalue"),
        ({"gradient_accumulation_steps": 1}, ValueError, "gradient_accumulation_steps"),
        ({"gradient_accumulation_steps": 2.0}, ValueError, "gradient_accumulation_steps"),
        ({"ema_momentum": 1.5}, ValueError, "ema_momentum"),
        ({"ema_overwrite_frequency": -1}, ValueError, "ema_overwrite_frequency"),
        ({"use_ema": "yes"}, TypeError, "use_ema"),
        ({"loss_scale_factor": 128.0}, ValueError, "loss_scale_factor"),
    ],
)
def test_optimizer_options_are_checked(options, error, name):
    with pytest.raises(error, match=f"^{name}"):
        optimizers.Adam(**options)


def test_lion_beta_1_must_be_positive():
    with pytest.raises(ValueError, match=r"^beta_1"):
        optimizers.Lion(beta_1=0.0)


def test_gradient_accumulation_updates_with_the_mean_every_k_batches():
    rng = np.random.default_rng(3)
    model = mlp(4, [5], 2, out_activation="linear")
    model.compile(optimizers.SGD(0.5, gradient_accumulation_steps=2), "mse")
    batches = [(rng.standard_normal((6, 4)), rng.standard_normal((6, 2))) for _ in range(2)]
    start = model.get_weights()
    grads = [model.training_state.batch_gradients(x, y)[1] for x, y in batches]
    model.train_on_batch(*batches[0])
    for before, after in zip(start, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # accumulated, not applied
    model.train_on_batch(*batches[1])
    for before, after, first, second in zip(start, model.get_weights(), *grads):
        np.testing.assert_allclose(after, before - 0.5 * (first + second) / 2, rtol=1e-12)
    assert model.optimizer.iterations == 2
    assert not model.optimizer.variables["gradient_accumulator"].any()


def test_ema_weights_replace_the_trained_ones_when_fit_ends():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 2))
    model = mlp(4, [5], 2, out_activation="linear")
    plain = mlp(4, [5], 2, out_activation="linear")
    plain.set_weights(model.get_weights())
    model.compile(optimizers.SGD(0.1, use_ema=True, ema_momentum=0.25), "mse")
    plain.compile(optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    # Keras's average: the first update's weights w1, then 0.25 * w1 + 0.75 * w2
    plain.train_on_batch(x[:10], y[:10])
    first = plain.get_weights()
    plain.train_on_batch(x[10:], y[10:])
    for ours, w1, w2 in zip(model.get_weights(), first, plain.get_weights()):
        np.testing.assert_allclose(ours, 0.25 * w1 + 0.75 * w2, rtol=1e-12, atol=1e-15)


def test_ema_and_accumulation_leave_frozen_layers_alone():
    # The optimizer is bound to the trainable weights: its average and accumulator cover
    # those, and fit's final copy of the average writes only them.
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 2))
    model = mlp(4, [5], 2, out_activation="linear")
    model.layers[0].trainable = False
    frozen = [w.copy() for w in model.layers[0].get_weights()]
    optimizer = optimizers.Adam(
        0.05, use_ema=True, ema_overwrite_frequency=2, gradient_accumulation_steps=2
    )
    model.compile(optimizer, "mse")
    start = [w.copy() for w in model.layers[1].get_weights()]
    model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    for before, after in zip(frozen, model.layers[0].get_weights()):
        np.testing.assert_array_equal(before, after)
    assert optimizer.variables["average"].size == sum(w.size for w in start)
    trained = np.concatenate([w.ravel() for w in model.layers[1].get_weights()])
    np.testing.assert_array_equal(trained, optimizer.variables["average"])
    assert not np.array_equal(trained, np.concatenate([w.ravel() for w in start]))


def test_clipnorm_clips_each_gradient_separately():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2)) * 100
    model = mlp(3, [4], 2, out_activation="linear")
    model.compile(optimizers.SGD(1.0, clipnorm=0.01), "mse")
    before = model.get_weights()
    _, grads = model.training_state.batch_gradients(x, y)
    model.train_on_batch(x, y)
    for old, new, grad in zip(before, model.get_weights(), grads):
        step = old - new
        np.testing.assert_allclose(
            step, grad * min(1.0, 0.01 / np.linalg.norm(grad)), rtol=1e-10, atol=1e-15
        )


def test_optimizer_names_defaults_and_learning_rate_setter():
    adam = optimizers.get("adam")
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert optimizers.get("rmsprop").rho == 0.9
    assert optimizers.get("SGD").learning_rate == 0.01
    assert optimizers.get("adamw").weight_decay == 0.004
    adam.learning_rate = 0.5
    assert adam.learning_rate == 0.5
    scheduled = optimizers.SGD(schedules.CosineDecay(1.0, decay_steps=10, alpha=0.1))
    with pytest.raises(TypeError, match="learning_rate"):
        scheduled.learning_rate = 0.1
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.SGD(-1.0)
    with pytest.raises(ValueError, match="optimizer: unknown"):
        optimizers.get("lbfgs")
    with pytest.raises(ValueError, match="clipnorm"):
        optimizers.SGD(clipnorm=1.0, global_clipnorm=1.0)


def test_schedules_follow_keras_formulas():
    decay = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert decay(0) == 0.1 and decay(9) == 0.1 and decay(10) == 0.05
    cosine = schedules.CosineDecay(1.0, decay_steps=100, alpha=0.1)
    assert cosine(0) == 1.0 and math.isclose(cosine(50), 0.55) and math.isclose(cosine(1000), 0.1)
    warm = schedules.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=5)
    assert math.isclose(warm(2), 0.4) and math.isclose(warm(5), 1.0)
    restored = schedules.deserialize(schedules.serialize(cosine))
    assert restored.get_config() == cosine.get_config()


# -- metrics --------------------------------------------------------------------------------


def test_metrics_resolve_as_keras_does_and_compute_correctly():
    rng = np.random.default_rng(9)
    x, y = classification_data(rng, n=50, features=5, classes=3)
    model = mlp(5, [8], 3)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.metrics_names == ["loss", "accuracy"]
    logs = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    p = model.predict(x)
    assert math.isclose(logs["accuracy"], np.mean(p.argmax(1) == y))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["mse"])
    with pytest.raises(ValueError, match="metrics: 'mse' needs one target per output"):
        model.evaluate(x, y, verbose=0)

    # mse/mae need probabilities: with the fused loss they see softmax outputs, not logits

    onehot = np.eye(3)[y]
    model.compile(
        "adam", "categorical_crossentropy", metrics=["acc", metrics.MeanSquaredError(), "mae"]
    )
    logs = model.evaluate(x, onehot, batch_size=7, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "acc", "mean_squared_error", "mae"}
    assert math.isclose(logs["acc"], np.mean(p.argmax(1) == y))
    assert math.isclose(logs["mean_squared_error"], np.mean((p - onehot) ** 2), rel_tol=1e-12)
    assert math.isclose(logs["mae"], np.mean(np.abs(p - onehot)), rel_tol=1e-12)

    binary = mlp(5, [4], 1, out_activation="sigmoid")
    targets = (x[:, 0] > 0).astype(float)
    binary.compile(
        "adam",
        "binary_crossentropy",
        metrics=["accuracy", metrics.BinaryAccuracy(name="b", threshold=0.7)],
    )
    logs = binary.evaluate(x, targets, return_dict=True, verbose=0)
    q = binary.predict(x)[:, 0]
    assert math.isclose(logs["accuracy"], np.mean((q > 0.5) == targets))
    assert math.isclose(logs["b"], np.mean((q > 0.7) == targets))


def test_standalone_metric_api():
    metric = metrics.SparseCategoricalAccuracy()
    metric.update_state([0, 1, 2], [[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    assert math.isclose(metric.result(), 2 / 3)
    metric.update_state([1], [[0.1, 0.9, 0]])
    assert math.isclose(metric.result(), 3 / 4)
    metric.reset_state()
    assert metric.result() == 0.0
    mse = metrics.get("mse")
    mse.update_state([[1.0, 2.0]], [[1.0, 4.0]])
    assert mse.result() == 2.0


# -- fit / evaluate / predict -----------------------------------------------------------------


def test_fit_trains_and_records_history():
    rng = np.random.default_rng(10)
    centers = rng.standard_normal((3, 4)) * 3
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.standard_normal((300, 4))
    model = mlp(4, [16], 3, dtype="float32")
    model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=8, validation_split=0.2, verbose=0, seed=0)
    assert history is model.history
    assert history.epoch == list(range(8))
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 8 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.9
    # validation_split holds out the last 20% (before shuffling): evaluating them matches
    assert math.isclose(
        history.history["val_loss"][-1],
        model.evaluate(x[240:], y[240:], verbose=0)[0],
        rel_tol=1e-5,
    )
    assert model.predict(x).dtype == np.float32


def test_fit_is_reproducible_and_resumes_with_initial_epoch():
    rng = np.random.default_rng(11)
    x, y = classification_data(rng, n=70)

    def make():
        model = mlp(12, [10], 4, seed=3)
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    one = make()
    one.fit(x, y, batch_size=16, epochs=3, seed=5, verbose=0)
    two = make()
    two.fit(x, y, batch_size=16, epochs=1, seed=5, verbose=0)
    two.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, seed=5, verbose=0)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_array_equal(a, b)
    three = make()
    three.fit(x, y, batch_size=16, epochs=3, seed=6, verbose=0)
    assert not np.array_equal(three.get_weights()[0], one.get_weights()[0])


def test_fit_without_shuffle_equals_train_on_batch_including_the_short_last_batch():
    rng = np.random.default_rng(12)
    x, y = classification_data(rng, n=37)
    a, b = mlp(12, [6], 4), mlp(12, [6], 4)
    for model in (a, b):
        model.compile("adam", "sparse_categorical_crossentropy")
    history = a.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    losses_ = [b.train_on_batch(x[i : i + 10], y[i : i + 10]) for i in range(0, 37, 10)]
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    expected = sum(loss * len(x[i : i + 10]) for loss, i in zip(losses_, range(0, 37, 10))) / 37
    assert math.isclose(history.history["loss"][0], expected, rel_tol=1e-12)


def test_sample_weights_of_zero_remove_samples():
    rng = np.random.default_rng(13)
    x, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    model = mlp(3, [4], 2, out_activation="linear")
    model.compile("sgd", "mse")
    weights = np.r_[np.ones(10), np.zeros(10)]
    weighted, grads = model.training_state.batch_gradients(x, y, sample_weight=weights)
    half, half_grads = model.training_state.batch_gradients(x[:10], y[:10])
    assert math.isclose(weighted, half / 2, rel_tol=1e-12)
    for a, b in zip(grads, half_grads):
        np.testing.assert_allclose(a, b / 2, rtol=1e-12, atol=1e-15)


def test_class_weight_scales_the_samples_of_each_class():
    rng = np.random.default_rng(20)
    x, y = classification_data(rng, n=24)
    model = mlp(12, [5], 4)
    model.compile("sgd", "sparse_categorical_crossentropy")
    weights = {0: 2.0, 1: 0.0, 2: 1.0, 3: 0.5}
    expected = model.training_state.batch_gradients(
        x, y, sample_weight=np.array([weights[c] for c in y])
    )[1]
    history = model.fit(x, y, batch_size=24, class_weight=weights, shuffle=False, verbose=0)
    assert history.history["loss"][0] > 0
    other = mlp(12, [5], 4)
    other.compile(optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    before = other.get_weights()
    other.fit(x, np.eye(4)[y].argmax(1), batch_size=24, class_weight=weights, verbose=0)
    for old, new, grad in zip(before, other.get_weights(), expected):
        np.testing.assert_allclose(old - new, 0.01 * grad, rtol=1e-9, atol=1e-15)


def test_validation_data_and_validation_freq():
    rng = np.random.default_rng(14)
    x, y = classification_data(rng, n=40)
    model = mlp(12, [5], 4)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(
        x, y, epochs=4, validation_data=(x[:10], y[:10]), validation_freq=2, verbose=0
    )
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2


def test_evaluate_predict_and_on_batch_variants_agree():
    rng = np.random.default_rng(15)
    x, y = classification_data(rng, n=45)
    model = mlp(12, [9], 4)
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    full = model.predict_on_batch(x)
    for batch_size in (1, 7, 45, 100):
        np.testing.assert_allclose(
            model.predict(x, batch_size=batch_size), full, rtol=1e-13, atol=1e-15
        )
    loss, accuracy = model.evaluate(x, y, batch_size=8, verbose=0)
    assert math.isclose(loss, model.test_on_batch(x, y)[0], rel_tol=1e-12)
    assert math.isclose(accuracy, np.mean(full.argmax(1) == y))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    assert model.predict(np.zeros((0, 12))).shape == (0, 4)


def test_dropout_is_seeded_scaled_and_off_at_inference():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((200, 10))
    y = rng.standard_normal((200, 10))
    model = densekit.Sequential(
        [Input((10,)), Dropout(0.25, seed=1), Dense(10, kernel_initializer="ones")], dtype="float64"
    )
    model.compile("sgd", "mse")
    np.testing.assert_array_equal(model.predict(x), x @ np.ones((10, 10)))
    loss, grads = model.training_state.batch_gradients(x, y)
    workspace = model.training_state.workspace("train", 200)
    dropped = workspace.acts[0]
    mask = workspace.scratch[0]["mask"]
    kept = dropped != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(dropped[kept], x[kept] / 0.75, rtol=1e-15)
    # reference: the dense layer applied to the masked input
    ref = [(model.layers[1].kernel, model.layers[1].bias, "linear", None)]
    for a, b in zip(grads, reference_mlp.gradients(ref, x * mask, "mse", y)[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # a same-seeded model draws the same masks
    again = densekit.Sequential(
        [Input((10,)), Dropout(0.25, seed=1), Dense(10, kernel_initializer="ones")], dtype="float64"
    )
    again.compile("sgd", "mse")
    assert again.training_state.batch_gradients(x, y)[0] == loss


def test_a_training_step_allocates_nothing_in_steady_state():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((1000, 64)).astype(np.float32)
    y = rng.integers(0, 10, 1000)
    model = densekit.Sequential(
        [Input((64,)), Dense(128, "relu"), Dropout(0.1, seed=0), Dense(10, "softmax")]
    )
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, batch_size=96, epochs=1, verbose=0)  # builds buffers for 96 and 40 rows
    tracemalloc.start()
    try:
        model.fit(x, y, batch_size=96, epochs=1, verbose=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # fit allocates its two index arrays (8 KB each) once; the 32 steps allocate no buffers
    # (one activation buffer of a batch is 96 * 128 * 4 = 48 KB)
    assert peak < 2 * 1000 * 8 + 16384
    workspace = model.training_state.workspace("train", 96)
    buffers_before = [id(a) for a in workspace.acts]
    model.fit(x, y, batch_size=96, epochs=1, verbose=0)
    assert [id(a) for a in workspace.acts] == buffers_before
    assert workspace.planned == {(96, False), (40, False)}


def test_per_step_tracemalloc_is_flat():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model = densekit.Sequential([Input((32,)), Dense(256, "gelu"), Dense(10, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    state = model.training_state
    plan = state.workspace("train", 64).plan(64, False)
    tracemalloc.start()
    try:
        for _ in range(50):
            state.train_step(plan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Python's own small objects only: no array of the step's size (64 * 256 * 4 = 64 KB)
    assert peak < 16384


# -- float32 / float64, structure, config --------------------------------------------------------


def test_float32_and_float64_models_agree():
    rng = np.random.default_rng(19)
    x, y = classification_data(rng, n=64)
    wide = mlp(12, [16], 4, dtype="float64")
    narrow = densekit.Sequential.from_config({**wide.get_config(), "dtype": "float32"})
    narrow.set_weights(wide.get_weights())
    for model in (wide, narrow):
        model.compile(optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, seed=0, verbose=0)
    assert narrow.get_weights()[0].dtype == np.float32
    for a, b in zip(narrow.get_weights(), wide.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_structure_summary_and_config_round_trip():
    model = densekit.Sequential(name="net")
    model.add(Dense(8, "relu", input_shape=(5,)))
    model.add(Dropout(0.5))
    model.add(Dense(3, "softmax", use_bias=False, kernel_initializer="he_normal"))
    assert model.built and model.count_params() == 5 * 8 + 8 + 8 * 3
    assert [w.shape for w in model.get_weights()] == [(5, 8), (8,), (8, 3)]
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "net"' in text and "(None, 3)" in text and "Total params: 72" in text
    clone = densekit.Sequential.from_config(model.get_config())
    assert [type(layer) for layer in clone.layers] == [Dense, Dropout, Dense]
    assert (
        clone.layers[2].kernel_initializer.get_config()
        == model.layers[2].kernel_initializer.get_config()
    )
    clone.set_weights(model.get_weights())
    x = np.ones((2, 5), np.float32)
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    kept = model.get_weights()[:2]
    popped = model.pop()
    assert isinstance(popped, Dense) and model.output_dim == 8
    model.add(Dense(4))
    for a, b in zip(model.get_weights()[:2], kept):
        np.testing.assert_array_equal(a, b)


def test_lazy_build_and_build_argument():
    model = densekit.Sequential([Dense(4), Dense(2)])
    assert not model.built
    with pytest.raises(ValueError, match="input_shape"):
        model.build()
    model.build((None, 7))
    assert model.layers[0].kernel.shape == (7, 4)
    lazy = densekit.Sequential([Dense(3)])
    lazy.compile("sgd", "mse")
    lazy.fit(np.zeros((4, 6)), np.zeros((4, 3)), verbose=0)
    assert lazy.input_dim == 6


def test_initializers_are_seeded_and_scaled():
    for name in [
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "he_normal",
        "lecun_normal",
        "random_normal",
    ]:
        init = densekit.initializers.get(name)
        init.seed = 3
        a, b = init((400, 300)), init((400, 300))
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32
    glorot = densekit.initializers.GlorotUniform(seed=1)((400, 300), "float64")
    assert np.abs(glorot).max() <= math.sqrt(6 / 700) and math.isclose(
        glorot.var(), 2 / 700, rel_tol=0.05
    )
    he = densekit.initializers.HeNormal(seed=1)((400, 300), "float64")
    assert (
        math.isclose(he.var(), 2 / 400, rel_tol=0.05)
        and np.abs(he).max() <= 2 * math.sqrt(2 / 400) / 0.8796 + 1e-12
    )
    assert not densekit.initializers.Zeros()((3,)).any()
    assert densekit.initializers.Ones()((3,)).all()
    densekit.set_random_seed(5)
    first = Dense(3)
    densekit.Sequential([Input((2,)), first])
    densekit.set_random_seed(5)
    second = Dense(3)
    densekit.Sequential([Input((2,)), second])
    np.testing.assert_array_equal(first.kernel, second.kernel)


def test_keras_activation_names():
    assert densekit.activations.get("leaky_relu").alpha == 0.2
    assert densekit.activations.get(None).name == "linear"
    assert densekit.activations.get("swish") == densekit.activations.get("silu")
    with pytest.raises(ValueError, match="activation: unknown activation 'swoosh'"):
        Dense(3, activation="swoosh")


# -- input validation ------------------------------------------------------------------------


@pytest.fixture
def classifier():
    model = mlp(4, [5], 3, dtype="float32")
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    return model


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            dict(x=np.zeros((10, 5)), y=np.zeros(10, int)),
            ValueError,
            r"x: expected shape \(n, 4\), got \(10, 5\)",
        ),
        (dict(x=np.zeros(10), y=np.zeros(10, int)), ValueError, "x: expected a 2-D array"),
        (dict(x="abc", y=np.zeros(10, int)), TypeError, "x: cannot convert"),
        (
            dict(x=np.zeros((10, 4)), y=np.zeros(9, int)),
            ValueError,
            r"y: expected 10 integer class labels",
        ),
        (
            dict(x=np.zeros((10, 4)), y=np.full(10, 3)),
            ValueError,
            r"y: class label 3 is outside \[0, 3\)",
        ),
        (dict(x=np.zeros((10, 4)), y=np.full(10, -1)), ValueError, r"y: class label -1"),
        (
            dict(x=np.zeros((10, 4)), y=np.full(10, 0.5)),
            ValueError,
            "y: expected integer class labels",
        ),
        (dict(x=np.zeros((10, 4)), y=None), TypeError, "y: the targets are missing"),
        (
            dict(x=np.zeros((10, 4)), y=np.zeros(10, int), sample_weight=np.ones(3)),
            ValueError,
            "sample_weight: expected one weight per sample",
        ),
        (
            dict(x=np.zeros((10, 4)), y=np.zeros(10, int), sample_weight=-np.ones(10)),
            ValueError,
            "sample_weight: expected finite weights",
        ),
        (
            dict(x=np.zeros((10, 4)), y=np.zeros(10, int), batch_size=0),
            ValueError,
            "batch_size: expected an int >= 1",
        ),
        (dict(x=np.zeros((10, 4)), y=np.zeros(10, int), epochs=-1), ValueError, "epochs"),
        (
            dict(x=np.zeros((10, 4)), y=np.zeros(10, int), validation_split=1.5),
            ValueError,
            "validation_split",
        ),
        (
            dict(
                x=np.zeros((10, 4)),
                y=np.zeros(10, int),
                validation_data=(np.zeros((2, 3)), np.zeros(2, int)),
            ),
            ValueError,
            r"validation_data\[0\]",
        ),
        (dict(x=np.zeros((10, 4)), y=np.zeros(10, int), verbose=3), ValueError, "verbose"),
    ],
)
def test_fit_rejects_bad_inputs_naming_the_argument(classifier, kwargs, error, pattern):
    before = classifier.get_weights()
    with pytest.raises(error, match=pattern):
        classifier.fit(**{"verbose": 0, **kwargs})
    for a, b in zip(before, classifier.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing was trained


def test_other_entry_points_validate_too(classifier):
    with pytest.raises(ValueError, match="x: expected shape"):
        classifier.predict(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="y: class label 7"):
        classifier.train_on_batch(np.zeros((2, 4)), [0, 7])
    with pytest.raises(ValueError, match="y: class label"):
        classifier.evaluate(np.zeros((2, 4)), [0, 9], verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        densekit.Sequential([Input((2,)), Dense(1)]).fit(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="units"):
        Dense(0)
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)
    with pytest.raises(TypeError, match="dtype"):
        densekit.Sequential(dtype="int32")
    with pytest.raises(ValueError, match="weights: the model has 4 weight arrays, got 1"):
        classifier.set_weights([np.zeros((4, 5))])
    with pytest.raises(ValueError, match=r"weights\[0\]: expected shape \(4, 5\)"):
        classifier.set_weights([np.zeros((5, 4)), np.zeros(5), np.zeros((5, 3)), np.zeros(3)])


def test_array_likes_are_converted_once(classifier):
    x = [[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]
    y = np.array([0.0, 2.0])  # integral floats are valid labels
    classifier.fit(x, y, verbose=0)
    assert classifier.predict(np.asfortranarray(np.array(x))).shape == (2, 3)
    assert layers.Input(5).shape == (5,)


def test_the_demo_reaches_96_percent_on_digits():
    pytest.importorskip("sklearn")
    from densekit import demo

    result = demo.train(verbose=0)
    assert result["accuracy"] >= 0.96


# -- the training state's seams ------------------------------------------------------------------


def regularized_model(dtype="float64", optimizer="adam"):
    densekit.set_random_seed(21)
    model = densekit.Sequential(
        [Input((12,)), Dense(16, "tanh", kernel_regularizer="l2"), Dense(4)], dtype=dtype
    )
    model.compile(optimizer, losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    return model


def test_train_step_is_compute_gradients_then_apply_gradients():
    x, y = classification_data(np.random.default_rng(22))
    whole, parts = regularized_model(), regularized_model()
    for _ in range(3):
        whole.train_on_batch(x, y)
        state = parts.training_state
        plan = state.load_batch(*state.dataset(x, y))
        loss = state.compute_gradients(plan)
        assert loss == state.batch_gradients(x, y)[0]
        state.apply_gradients()
    for a, b in zip(whole.get_weights(), parts.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert whole.optimizer.iterations == parts.optimizer.iterations == 3


def test_a_data_parallel_step_from_reduced_gradients_matches_the_whole_batch():
    """What an allreduce strategy does: each replica computes its slice's gradients into its
    flat gradient buffer, the buffers are averaged, one replica applies them."""
    x, y = classification_data(np.random.default_rng(23), n=64)
    whole, split = regularized_model(optimizer="sgd"), regularized_model(optimizer="sgd")
    whole.train_on_batch(x, y)
    state = split.training_state
    halves = [state.replica(), state.replica()]
    for replica, rows in zip(halves, (slice(0, 32), slice(32, 64))):
        replica.compute_gradients(replica.load_batch(*replica.dataset(x[rows], y[rows])))
    np.copyto(state.gradients, (halves[0].gradients + halves[1].gradients) / 2)
    state.apply_gradients()
    for a, b in zip(whole.get_weights(), split.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_parameters_and_optimizer_state_can_be_set_as_a_broadcast_would():
    x, y = classification_data(np.random.default_rng(24))
    source, target = regularized_model(), regularized_model()
    source.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0)
    target.training_state.set_parameters(source.training_state.parameters)
    target.training_state.set_optimizer_state(*source.training_state.optimizer_state())
    assert target.optimizer.iterations == source.optimizer.iterations
    source.fit(x, y, epochs=1, batch_size=16, seed=2, verbose=0)
    target.fit(x, y, epochs=1, batch_size=16, seed=2, verbose=0)
    for a, b in zip(source.get_weights(), target.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="variables"):
        target.training_state.set_optimizer_state(0, {"momentum": np.zeros(3)})


def test_the_state_is_remade_after_compile_and_keeps_the_optimizer_state():
    x, y = classification_data(np.random.default_rng(25))
    model = regularized_model()
    model.fit(x, y, epochs=1, verbose=0)
    state = model.training_state
    steps, variables = model.optimizer_state()
    assert steps == model.optimizer.iterations > 0
    assert variables.keys() == model.optimizer.variables.keys()
    model.compile(model.optimizer, model.loss, ["accuracy"])
    assert model.training_state is not state
    assert model.training_state.optimizer_state()[0] == steps  # same optimizer, same buffer
    assert regularized_model().optimizer_state() is None  # not bound before any use


# -- Ctrl-C during a synchronous fit -------------------------------------------------------------
INTERRUPTED_FIT = """
import random, signal, sys, threading, time
import numpy as np
import densekit
from densekit import callbacks, layers, losses

class Record(callbacks.Callback):
    '''The step count, weights and optimizer state after the last whole step, and a signal
    that training has begun.'''
    def __init__(self):
        super().__init__()
        self.started = threading.Event()
    def on_train_begin(self, logs=None):
        self.record()
    def on_train_batch_end(self, batch, logs=None):
        self.record()
        self.started.set()
    def record(self):
        optimizer = self.model.optimizer
        self.last = (
            optimizer.iterations,
            self.model.get_weights(),
            [v.copy() for v in optimizer.variables.values()],
        )

def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 512)).astype(np.float32)
y = rng.integers(0, 4, 256)
main = threading.get_ident()
random.seed(0)
split = 0
for trial in range(int(sys.argv[1])):
    densekit.set_random_seed(trial)
    model = densekit.Sequential([layers.Input((512,)), layers.Dense(512), layers.Dense(4)])
    model.compile(sys.argv[2], losses.SparseCategoricalCrossentropy(from_logits=True))
    record = Record()

    def interrupt():
        record.started.wait(60)
        time.sleep(random.uniform(0.0, 0.02))
        signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=interrupt)
    sender.start()
    try:
        model.fit(x, y, epochs=10**6, batch_size=4, verbose=0, callbacks=[record])
    except KeyboardInterrupt:
        pass
    sender.join()
    steps, weights, state = record.last
    now = model.optimizer.iterations
    variables = list(model.optimizer.variables.values())
    if now == steps:  # interrupted before the step's update: nothing of it applied
        split += not (same(model.get_weights(), weights) and same(variables, state))
    else:  # after it: the update and its count
        changed = not same(model.get_weights(), weights) and not same(variables, state)
        split += not (now == steps + 1 and changed)
print("split", split)
"""


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_ctrl_c_in_fit_never_splits_an_update_from_its_count(optimizer):
    # a helper thread sends SIGINT to the main thread at a random moment of training: the
    # weights, the optimizer state and its step count are those after a whole step
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_FIT, "30", optimizer],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "split 0\n"


# -- non-finite data ------------------------------------------------------------------------------
def finite_check_model(check_finite=True, seed=0):
    model = mlp(12, [16], 4, dtype="float32", seed=seed)
    options = {"check_finite": True} if check_finite else {}
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"], **options)
    return model


def assert_same_training_state(model, other):
    for mine, theirs in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert model.optimizer.iterations == other.optimizer.iterations
    for name, state in model.optimizer.variables.items():
        np.testing.assert_array_equal(state, other.optimizer.variables[name])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_refuses_a_step_with_a_non_finite_loss_before_its_update(bad):
    x, y = classification_data(np.random.default_rng(0))
    x = x.astype(np.float32)
    x[3 * 8 + 5, 2] = bad  # in the fourth batch
    model = finite_check_model()
    model.fit(x[:24], y[:24], batch_size=8, shuffle=False, verbose=0)
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 3: the loss .* not finite"):
        model.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, shuffle=False, verbose=0)
    # the weights and optimizer state of the last good step: 3 + 3 batches
    replay = finite_check_model()
    replay.fit(x[:24], y[:24], batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert_same_training_state(model, replay)
    with pytest.raises(FloatingPointError, match="the loss"):
        model.train_on_batch(x[24:32], y[24:32])
    assert_same_training_state(model, replay)
    unchecked = finite_check_model(check_finite=False)
    unchecked.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert np.isnan(unchecked.get_weights()[0]).all()  # what the check prevents


def test_check_finite_refuses_a_non_finite_gradient_of_a_finite_loss():
    # the second sample's inputs cancel out exactly (equal weights times a power of two), its
    # loss is finite, but its kernel gradient x * dy overflows float32
    model = densekit.Sequential([Input((3,)), Dense(1)])
    model.compile("sgd", "mse", check_finite=True)
    model.set_weights([np.array([[0.5], [0.5], [0.0]]), np.zeros(1)])
    x = np.array([[1.0, 1.0, 1.0], [2.0**126, -(2.0**126), 0.0]], np.float32)  # exact
    y = np.array([[0.0], [100.0]], np.float32)
    weights = model.get_weights()
    assert math.isfinite(model.evaluate(x[1:], y[1:], verbose=0))
    with pytest.raises(FloatingPointError, match="epoch 0, batch 1: the gradients"):
        model.fit(x, y, batch_size=1, shuffle=False, verbose=0)
    assert model.optimizer.iterations == 1
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert not np.array_equal(model.get_weights()[0], weights[0])  # the first step was made


def test_check_finite_in_hogwild_workers_and_in_the_compile_config():
    x, y = classification_data(np.random.default_rng(0), n=400)
    x = x.astype(np.float32)
    x[300, 0] = np.nan
    model = finite_check_model()
    with pytest.raises(FloatingPointError, match="the loss"):
        model.fit(x, y, batch_size=8, workers=2, strategy="hogwild", shuffle=False, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert model.get_compile_config()["check_finite"] is True
    assert "check_finite" not in finite_check_model(check_finite=False).get_compile_config()
    with pytest.raises(TypeError, match="check_finite"):
        model.compile("adam", "mse", check_finite="yes")


@pytest.mark.parametrize("weight", [np.inf, np.nan, -1.0, 1e39])
def test_class_weight_must_be_finite_and_non_negative(weight):
    x, y = classification_data(np.random.default_rng(0))
    model = finite_check_model(check_finite=False)
    with pytest.raises(ValueError, match=r"class_weight: weight of class 1 must be a finite"):
        model.fit(x, y, class_weight={0: 1.0, 1: weight}, verbose=0)
    assert model.optimizer.iterations == 0


def test_evaluating_zero_samples_is_an_error():
    model = finite_check_model(check_finite=False)
    empty_x, empty_y = np.zeros((0, 12), np.float32), np.zeros(0, np.int64)
    with pytest.raises(ValueError, match="x: no samples to evaluate"):
        model.evaluate(empty_x, empty_y, verbose=0)
    with pytest.raises(ValueError, match="x: empty batch"):
        model.test_on_batch(empty_x, empty_y)
    x, y = classification_data(np.random.default_rng(0))
    with pytest.raises(ValueError, match="validation_data: no samples"):
        model.fit(x, y, validation_data=(empty_x, empty_y), verbose=0)
    assert model.optimizer.iterations == 0


def test_fit_puts_back_the_sigint_handler_it_found():
    x, y = classification_data(np.random.default_rng(0))
    model = mlp(12, [8], 4, dtype="float32")
    model.compile("adam", "sparse_categorical_crossentropy")
    calls = []
    original = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        for handler in (signal.SIG_IGN, signal.getsignal(signal.SIGINT)):
            signal.signal(signal.SIGINT, handler)
            model.fit(x, y, epochs=1, verbose=0)
            model.train_on_batch(x[:8], y[:8])
            assert signal.getsignal(signal.SIGINT) is handler
        signal.raise_signal(signal.SIGINT)  # the user's handler gets the signal
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, original)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_predict_outputs_start_on_a_cache_line(policy):
    rng = np.random.default_rng(3)
    densekit.set_random_seed(0)
    model = densekit.Sequential(
        [Input((12,)), Dense(16, "relu", dtype=policy), Dense(4, "softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = classification_data(rng)
    x = x.astype(np.float32)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    one_batch, batches = model.predict(x[:5], verbose=0), model.predict(x, batch_size=32, verbose=0)
    assert one_batch.ctypes.data % 64 == 0 and batches.ctypes.data % 64 == 0
    np.testing.assert_array_equal(batches[:5], one_batch)
