"""Normalization kernels (batch norm, layer norm, Keras's Normalization, feature moments) against
float64 NumPy references, finite differences, awkward shapes, thread counts and bad inputs;
and the layers in a model: save/load, Hogwild, fit_async, predict from other threads."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import densekit
from densekit import kernels, layers

EPS = 1e-3


# -- float64 references -----------------------------------------------------------------------
def ref_batch_norm(x, gamma, beta, mean, variance, eps=EPS):
    y = (x - mean) / np.sqrt(variance + eps)
    if gamma is not None:
        y = y * gamma
    return y if beta is None else y + beta


def ref_layer_norm(x, gamma, beta, eps=EPS):
    mean = x.mean(axis=1, keepdims=True)
    y = (x - mean) / np.sqrt(x.var(axis=1, keepdims=True) + eps)
    if gamma is not None:
        y = y * gamma
    return y if beta is None else y + beta


def ref_normalization(x, mean, variance, invert=False):
    std = np.maximum(np.sqrt(variance), 1e-7)
    return mean + x * std if invert else (x - mean) / std


def arrays(n, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, k)) * 2 + 1).astype(dtype)
    gamma = rng.normal(size=k).astype(dtype)
    beta = rng.normal(size=k).astype(dtype)
    return rng, x, gamma, beta


def tol(dtype):
    return {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-11}


DTYPES = [np.float32, np.float64]
shapes = st.tuples(
    st.sampled_from([1, 2, 3, 7, 31, 64, 65, 127, 131, 300]),
    st.sampled_from([1, 2, 3, 5, 8, 13, 17, 33]),
)


# -- forward against references ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, center=st.booleans(), scale=st.booleans())
def test_batch_norm_forward_matches_reference(dtype, shape, center, scale):
    n, k = shape
    rng, x, gamma, beta = arrays(n, k, dtype)
    g, b = (gamma if scale else None), (beta if center else None)
    y, mean, variance = kernels.batch_norm_forward(x, g, b, training=True)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), **tol(dtype))
    np.testing.assert_allclose(variance, x64.var(0), **tol(dtype))
    g64 = None if g is None else g.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    expected = ref_batch_norm(x64, g64, b64, x64.mean(0), x64.var(0))
    np.testing.assert_allclose(y, expected, **tol(dtype))
    moving_mean = rng.normal(size=k).astype(dtype)
    moving_variance = rng.uniform(0.5, 2, size=k).astype(dtype)
    y = kernels.batch_norm_forward(x, g, b, moving_mean, moving_variance, training=False)
    expected = ref_batch_norm(x64, g64, b64, moving_mean.astype(np.float64), moving_variance)
    np.testing.assert_allclose(y, expected, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, center=st.booleans(), scale=st.booleans())
def test_layer_norm_forward_matches_reference(dtype, shape, center, scale):
    n, k = shape
    _, x, gamma, beta = arrays(n, k, dtype)
    g, b = (gamma if scale else None), (beta if center else None)
    y, mean, inv_std = kernels.layer_norm_forward(x, g, b)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(1), **tol(dtype))
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(x64.var(1) + EPS), **tol(dtype))
    np.testing.assert_allclose(y, ref_layer_norm(x64, g, b), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("invert", [False, True])
@given(shape=shapes)
def test_normalization_forward_and_moments_match_reference(dtype, invert, shape):
    n, k = shape
    rng, x, _, _ = arrays(n, k, dtype)
    mean, variance = kernels.feature_moments(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), **tol(dtype))
    np.testing.assert_allclose(variance, x64.var(0), **tol(dtype))
    variance[0] = 0  # max(sqrt(variance), 1e-7)
    y = kernels.normalization_forward(x, mean, variance, invert=invert)
    np.testing.assert_allclose(y, ref_normalization(x64, mean, variance, invert), **tol(dtype))
    dy = rng.normal(size=x.shape).astype(dtype)
    dx = kernels.normalization_backward(dy, variance, invert=invert)
    std = np.maximum(np.sqrt(variance.astype(np.float64)), 1e-7)
    np.testing.assert_allclose(dx, dy * std if invert else dy / std, **tol(dtype))


def test_moving_average_update_is_keras_rule():
    rng = np.random.default_rng(1)
    mm, mv, m, v = (rng.normal(size=9) for _ in range(4))
    expected = (mm * 0.9 + m * 0.1, mv * 0.9 + v * 0.1)
    kernels.batch_norm_update_moving(mm, mv, m, v, momentum=0.9)
    np.testing.assert_allclose(mm, expected[0], rtol=1e-15)
    np.testing.assert_allclose(mv, expected[1], rtol=1e-15)


def test_zero_rows():
    x = np.zeros((0, 5))
    g = np.ones(5)
    assert kernels.batch_norm_forward(x, g, g, g, g, training=False).shape == (0, 5)
    y, mean, inv_std = kernels.layer_norm_forward(x, g, g)
    assert y.shape == (0, 5) and mean.shape == (0,) and inv_std.shape == (0,)
    dx, dg, db = kernels.layer_norm_backward(x, x, g, mean, inv_std)
    assert dx.shape == (0, 5) and np.all(dg == 0) and np.all(db == 0)
    assert kernels.normalization_forward(x, g, g).shape == (0, 5)
    with pytest.raises(ValueError, match="x: training needs at least one row"):
        kernels.batch_norm_forward(x, g, g, training=True)
    with pytest.raises(ValueError, match="x: expected at least one row"):
        kernels.feature_moments(x)


# -- gradients by finite differences ----------------------------------------------------------
def numeric_grad(f, a, h=1e-6):
    grad = np.zeros_like(a)
    flat, out = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f()
        flat[i] = keep - h
        down = f()
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(1, 3), (5, 4), (13, 3)])
def test_batch_norm_gradients_match_finite_differences(training, shape):
    rng, x, gamma, beta = arrays(*shape, np.float64, seed=3)
    dy = rng.normal(size=shape)
    mm, mv = rng.normal(size=shape[1]), rng.uniform(0.5, 2, size=shape[1])

    def loss():
        if training:
            y = kernels.batch_norm_forward(x, gamma, beta, training=True)[0]
        else:
            y = kernels.batch_norm_forward(x, gamma, beta, mm, mv, training=False)
        return float((y * dy).sum())

    if training:
        _, mean, variance = kernels.batch_norm_forward(x, gamma, beta, training=True)
    else:
        mean, variance = mm, mv
    dx, dgamma, dbeta = kernels.batch_norm_backward(dy, x, gamma, mean, variance, training=training)
    for analytic, wrt in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, wrt), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 3), (4, 5), (6, 1), (3, 13)])
def test_layer_norm_gradients_match_finite_differences(shape):
    rng, x, gamma, beta = arrays(*shape, np.float64, seed=4)
    dy = rng.normal(size=shape)

    def loss():
        return float((kernels.layer_norm_forward(x, gamma, beta)[0] * dy).sum())

    _, mean, inv_std = kernels.layer_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = kernels.layer_norm_backward(dy, x, gamma, mean, inv_std)
    for analytic, wrt in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, wrt), rtol=1e-5, atol=1e-7)


def test_backward_without_gamma_and_partial_outputs():
    rng, x, _, _ = arrays(9, 4, np.float64)
    dy = rng.normal(size=x.shape)
    _, mean, variance = kernels.batch_norm_forward(x, None, None, training=True)
    dx, dg, db = kernels.batch_norm_backward(
        dy, x, None, mean, variance, training=True, need_dgamma=False, need_dbeta=False
    )
    assert dg is None and db is None
    full = kernels.batch_norm_backward(dy, x, np.ones(4), mean, variance, training=True)[0]
    np.testing.assert_allclose(dx, full, rtol=1e-14)
    _, m, s = kernels.layer_norm_forward(x, None, None)
    dx, dg, db = kernels.layer_norm_backward(dy, x, None, m, s, need_dx=False)
    assert dx is None and dg.shape == (4,) and db.shape == (4,)


# -- threads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1000, 3), (257, 129), (5, 600)])
def test_bitwise_identical_across_thread_counts(dtype, shape):
    rng, x, gamma, beta = arrays(*shape, dtype, seed=7)
    dy = rng.normal(size=shape).astype(dtype)
    results = []
    for threads in (1, 2, 3):
        options = {"num_threads": threads}
        y, mean, var = kernels.batch_norm_forward(x, gamma, beta, training=True, **options)
        grads = kernels.batch_norm_backward(dy, x, gamma, mean, var, training=True, **options)
        ly, lm, ls = kernels.layer_norm_forward(x, gamma, beta, **options)
        lgrads = kernels.layer_norm_backward(dy, x, gamma, lm, ls, **options)
        moments = kernels.feature_moments(x, **options)
        results.append([y, mean, var, *grads, ly, lm, ls, *lgrads, *moments])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


# -- ISAs ---------------------------------------------------------------------------------------
BITS_SCRIPT = """
import hashlib, numpy as np, densekit
from densekit import kernels as K
out = []
for dt in (np.float32, np.float64):
    for n, k in ((300, 7), (129, 67), (5, 600)):
        r = np.random.default_rng(n)
        x, dy = (r.normal(size=(n, k)).astype(dt) for _ in range(2))
        g, b = (r.normal(size=k).astype(dt) for _ in range(2))
        y, m, v = K.batch_norm_forward(x, g, b, training=True)
        out += [y, m, v, *K.batch_norm_backward(dy, x, g, m, v, training=True)]
        out += [K.batch_norm_forward(x, g, b, m, v, training=False)]
        out += list(K.batch_norm_backward(dy, x, g, m, v, training=False))
        y, m, s = K.layer_norm_forward(x, g, b)
        out += [y, m, s, *K.layer_norm_backward(dy, x, g, m, s)]
        y, m, s = K.layer_norm_forward(x, None, None)
        out += [y, *K.layer_norm_backward(dy, x, None, m, s)]
        out += [K.normalization_forward(x, g, np.abs(b)), K.normalization_backward(dy, b * b)]
digest = hashlib.sha256(b"".join(a.tobytes() for a in out)).hexdigest()
print(densekit.cpu_info()["isa"]["float32"], digest)
"""


def test_every_isa_gives_the_same_bits():
    """The row loops are compiled per ISA (DENSEKIT_ISA forces a lower one) and reassociate
    nothing: the results are bitwise the same on each."""
    digests = {}
    for isa in densekit.cpu_info()["available_isas"]:
        env = {**os.environ, "DENSEKIT_ISA": isa}
        proc = subprocess.run(
            [sys.executable, "-c", BITS_SCRIPT], env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        used, digest = proc.stdout.split()
        assert used == isa
        digests[isa] = digest
    assert len(set(digests.values())) == 1, digests


# -- boundary checks --------------------------------------------------------------------------
def test_inputs_are_checked_at_the_boundary():
    x = np.ones((4, 3), np.float32)
    g = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="gamma: expected dtype float32"):
        kernels.batch_norm_forward(x, np.ones(3), g, training=True)
    with pytest.raises(ValueError, match=r"beta: expected shape \(3,\)"):
        kernels.batch_norm_forward(x, g, np.ones(4, np.float32), training=True)
    with pytest.raises(TypeError, match="moving_mean: expected an array, got None"):
        kernels.batch_norm_forward(x, g, g, training=False)
    with pytest.raises(TypeError, match="training: expected True or False"):
        kernels.batch_norm_forward(x, g, g, training=1)
    with pytest.raises(ValueError, match="epsilon: expected a number > 0"):
        kernels.layer_norm_forward(x, g, g, epsilon=0.0)
    with pytest.raises(ValueError, match="x: expected a 2-d array"):
        kernels.layer_norm_forward(np.ones(3, np.float32), g, g)
    with pytest.raises(ValueError, match="out: must not share memory with x"):
        kernels.layer_norm_forward(x, g, g, out=x)
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        kernels.normalization_forward(x, g, g, out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="x: expected a C-contiguous"):
        kernels.normalization_forward(np.ones((3, 4), np.float32).T, g, g)
    with pytest.raises(ValueError, match="momentum: expected a number in"):
        kernels.batch_norm_update_moving(g.copy(), g.copy(), g, g, momentum=1.5)
    with pytest.raises(ValueError, match="moving_mean: expected a writeable"):
        frozen = g.copy()
        frozen.flags.writeable = False
        kernels.batch_norm_update_moving(frozen, g.copy(), g, g)
    with pytest.raises(ValueError, match="mean_out: batch statistics are computed only"):
        kernels.batch_norm_forward(x, g, g, g, g, training=False, mean_out=g.copy())


# -- the layers in a model --------------------------------------------------------------------
def bn_model(dtype="float32"):
    model = densekit.Sequential(
        [
            layers.Input((6,)),
            layers.Dense(8, "relu"),
            layers.BatchNormalization(),
            layers.GaussianNoise(0.1, seed=2),
            layers.LayerNormalization(),
            layers.Dense(2),
        ],
        dtype=dtype,
    )
    model.compile(optimizer=densekit.optimizers.Adam(0.01), loss="mse")
    return model


def xy(n=70):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, np.tanh(x[:, :2] * 2).astype("float32")


def test_save_and_load_keep_moving_statistics_and_resume_bitwise(tmp_path):
    x, y = xy()
    model = bn_model()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.tobytes() == b.tobytes()
    assert loaded.predict(x).tobytes() == model.predict(x).tobytes()
    # the optimizer state (trainable weights only) and the noise generator come back too
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert a.tobytes() == b.tobytes()


def test_normalization_adapt_before_and_after_building():
    x, _ = xy()
    before = layers.Normalization()
    before.adapt(x)
    model = densekit.Sequential([layers.Input((6,)), before])
    np.testing.assert_allclose(model.predict(x).mean(0), 0, atol=1e-5)
    after = layers.Normalization()
    model = densekit.Sequential([layers.Input((6,)), after])
    after.adapt([x[:20], x[20:]])  # batches, combined as Keras does
    np.testing.assert_allclose(after.mean, x.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.variance, x.astype(np.float64).var(0), rtol=1e-5)
    assert after.count == 70
    fixed = densekit.Sequential([layers.Input((6,)), layers.Normalization(mean=1.0, variance=4.0)])
    np.testing.assert_allclose(fixed.predict(x), (x - 1) / 2, rtol=1e-6)
    assert fixed.get_weights() == []
    with pytest.raises(ValueError, match="data: expected 6 features"):
        after.adapt(np.ones((3, 5)))
    with pytest.raises(ValueError, match="was adapted to 6 features, its input has 5"):
        densekit.Sequential([layers.Input((5,)), before])


def test_hogwild_and_fit_async_train_with_normalization_layers():
    x, y = xy(200)
    model = bn_model()
    before = model.layers[1].moving_mean.copy()
    model.fit(x, y, batch_size=16, epochs=2, workers=2, strategy="hogwild", verbose=0)
    assert not np.array_equal(before, model.layers[1].moving_mean)
    assert np.all(np.isfinite(model.predict(x)))
    job = model.fit_async(x, y, batch_size=16, epochs=3, verbose=0)
    while not job.done():
        assert np.all(np.isfinite(model.predict(x)))  # snapshots taken between steps
    assert len(job.result().history["loss"]) == 3


def test_batch_gradients_reach_through_the_layers_and_skip_statistics():
    x, y = xy(10)
    model = bn_model("float64")
    _, grads = model.training_state.batch_gradients(x.astype(np.float64), y)
    # gradients of the trained weights only: no moving statistics among them
    names = [
        f"{layer.name}/{attr}"
        for layer in model.layers
        for attr, _, _ in layer.weight_specs
        if layer.weight_is_trainable(attr)
    ]
    assert len(names) == len(grads) == len(model.trainable_weights)
    assert not any("moving" in name for name in names)
    by_name = dict(zip(names, grads))
    assert np.any(by_name[f"{model.layers[0].name}/kernel"] != 0)
    assert np.any(by_name[f"{model.layers[1].name}/gamma"] != 0)
    assert len(model.non_trainable_weights) == 2


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="momentum"):
        layers.BatchNormalization(momentum=2)
    with pytest.raises(ValueError, match="axis"):
        layers.LayerNormalization(axis=0)
    with pytest.raises(ValueError, match="stddev"):
        layers.GaussianNoise(-1)
    with pytest.raises(ValueError, match="mean, variance"):
        layers.Normalization(mean=1.0)
    for layer in (
        layers.BatchNormalization(center=False, momentum=0.9),
        layers.LayerNormalization(epsilon=1e-5),
        layers.Normalization(mean=[1, 2], variance=[3, 4], invert=True),
        layers.GaussianNoise(0.2, seed=3),
        layers.Flatten(),
    ):
        again = layers.deserialize(layers.serialize(layer))
        assert again.get_config() == layer.get_config()


def test_summary_counts_statistics_as_non_trainable():
    model = densekit.Sequential([layers.Input((5,)), layers.Dense(4), layers.BatchNormalization()])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 40 " in text
    assert "Trainable params: 32 " in text
    assert "Non-trainable params: 8 " in text


def test_unseeded_gaussian_noise_resumes_bitwise_after_load(tmp_path):
    x, y = xy(40)
    model = densekit.Sequential([layers.Input((6,)), layers.Dense(4), layers.GaussianNoise(0.2),
                                 layers.Dense(2)])  # fmt: skip
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "g.npz")
    loaded = densekit.load_model(tmp_path / "g.npz")
    first = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    again = loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    assert first == again


def test_no_features_with_huge_row_counts_return_at_once():
    # found by the fuzzer: a (2**40, 0) array has nothing to read, but the row loops ran
    x = np.empty((2**40, 0), np.float32)
    g = np.empty(0, np.float32)
    assert kernels.batch_norm_forward(x, g, g, training=True)[0].shape == x.shape
    assert kernels.batch_norm_backward(x, x, g, g, g, training=True)[0].shape == x.shape
    assert kernels.normalization_forward(x, g, g).shape == x.shape


def _unfolded_predict(model, x):
    """predict computed layer by layer with the kernels: Dense, the inference batch norm,
    the activation (what the folded DenseChain step stands for)."""
    h = x.astype(np.float64)
    for layer in model.layers:
        if isinstance(layer, layers.Dense):
            h = h @ layer.kernel + (layer.bias if layer.use_bias else 0)
            h = kernels.activation_forward(h, layer.activation.name)
        elif isinstance(layer, layers.BatchNormalization):
            scale = 1.0 / np.sqrt(layer.moving_variance.astype(np.float64) + layer.epsilon)
            h = (h - layer.moving_mean) * scale
            h = h * (1.0 if layer.gamma is None else layer.gamma)
            h = h + (0.0 if layer.beta is None else layer.beta)
        else:
            h = kernels.activation_forward(h, layer.activation.name)
    return h


@pytest.mark.parametrize("use_bias", [True, False])
def test_predict_folds_batch_norm_into_the_dense_layer_before_it(use_bias):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((300, 20)).astype(np.float32) * 3 + 1
    y = rng.integers(0, 4, 300)
    densekit.set_random_seed(5)
    model = densekit.Sequential(
        [
            layers.Input((20,)),
            layers.Dense(32, use_bias=use_bias),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(16),
            layers.BatchNormalization(center=False, scale=False),
            layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    # the whole model is one DenseChain call, its batch norms folded into the products
    assert type(model._predict_chain).__name__ == "RefreshedChain"
    want = _unfolded_predict(model, x)
    np.testing.assert_allclose(model.predict(x, batch_size=64), want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(model.predict(x[:1]), want[:1], rtol=2e-5, atol=2e-6)
    # the folded weights follow the moving statistics and weights set afterwards
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    np.testing.assert_allclose(model.predict(x), _unfolded_predict(model, x), rtol=2e-5, atol=2e-6)
    model.layers[1].set_weights([w * 2 for w in model.layers[1].get_weights()])
    np.testing.assert_allclose(model.predict(x), _unfolded_predict(model, x), rtol=2e-5, atol=2e-6)
    # evaluate runs the layers one by one: the same probabilities to float32 rounding
    np.testing.assert_allclose(
        model.evaluate(x, y, verbose=0),
        float(-np.log(_unfolded_predict(model, x)[np.arange(300), y]).mean()),
        rtol=1e-5,
    )
