"""Saving: bit-identical reload, identical resumed training (optimizer state, dropout
generators, schedules), weights-only files, atomic writes, and clear errors on bad files."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import densekit
from densekit import optimizers, saving, schedules
from densekit.layers import Dense, Dropout, Input


def data(seed=0, n=90):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n)


def trained(optimizer=None, seed=0):
    densekit.set_random_seed(seed)
    model = densekit.Sequential(
        [Input((6,)), Dense(16, "gelu"), Dropout(0.2, seed=4), Dense(3, "softmax")], name="net"
    )
    model.compile(
        optimizer or optimizers.Adam(0.01, amsgrad=True),
        "sparse_categorical_crossentropy",
        ["accuracy"],
    )
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=2, seed=1, verbose=0)
    return model


def test_reloaded_model_predicts_bit_identically(tmp_path):
    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    x, _ = data(seed=1)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.name == "net" and [type(layer) for layer in loaded.layers] == [
        Dense,
        Dropout,
        Dense,
    ]
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.iterations == model.optimizer.iterations == 12
    assert loaded.metrics_names == ["loss", "accuracy"]


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: optimizers.Adam(0.01, amsgrad=True),
        lambda: optimizers.SGD(schedules.ExponentialDecay(0.1, 5, 0.9), momentum=0.9),
        lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
        # the checkpoint falls mid-accumulation (12 batches, 5 per update); the average and
        # Nadam's momentum product carry over
        lambda: optimizers.Nadam(
            0.01, use_ema=True, ema_overwrite_frequency=2, gradient_accumulation_steps=5
        ),
        lambda: optimizers.Adagrad(0.05, clipvalue=0.5, weight_decay=0.01),
        lambda: optimizers.Adamax(0.01),
        lambda: optimizers.Lion(1e-3, weight_decay=0.1),
    ],
    ids=[
        "adam-amsgrad",
        "sgd-momentum-schedule",
        "rmsprop-centered",
        "nadam-ema-accumulation",
        "adagrad-clipvalue",
        "adamax",
        "lion",
    ],
)
def test_training_resumes_identically(tmp_path, make_optimizer):
    model = trained(make_optimizer())
    path = tmp_path / "checkpoint.npz"
    model.save(path)
    loaded = densekit.load_model(path)
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, seed=1, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, seed=1, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # and equals an uninterrupted run
    straight = trained(make_optimizer())
    straight.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, seed=1, verbose=0)
    for a, b in zip(straight.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_changed_by_a_callback_is_saved(tmp_path):
    model = trained(optimizers.SGD(0.1))
    model.optimizer.learning_rate = 0.03
    model.save(tmp_path / "m.npz")
    assert densekit.load_model(tmp_path / "m.npz").optimizer.learning_rate == 0.03


def test_uncompiled_float64_model_and_compile_false(tmp_path):
    model = densekit.Sequential([Input((3,)), Dense(2, "tanh", use_bias=False)], dtype="float64")
    model.save(tmp_path / "plain.npz")
    loaded = densekit.load_model(tmp_path / "plain.npz")
    assert not loaded.compiled and loaded.dtype == "float64"
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    compiled = trained()
    compiled.save(tmp_path / "compiled.npz")
    assert not densekit.load_model(tmp_path / "compiled.npz", compile=False).compiled
    compiled.save(tmp_path / "no-optimizer.npz", include_optimizer=False)
    fresh = densekit.load_model(tmp_path / "no-optimizer.npz")
    assert fresh.compiled and fresh.optimizer.iterations == 0


def test_weights_files(tmp_path):
    model = trained()
    model.save_weights(tmp_path / "w.npz")
    other = trained(seed=5)
    assert not np.array_equal(other.get_weights()[0], model.get_weights()[0])
    other.load_weights(tmp_path / "w.npz")
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a full model file also provides weights; an unbuilt model is built from the file
    model.save(tmp_path / "full.npz")
    unbuilt = densekit.Sequential([Dense(16, "gelu"), Dropout(0.2), Dense(3, "softmax")])
    unbuilt.load_weights(tmp_path / "full.npz")
    np.testing.assert_array_equal(unbuilt.get_weights()[2], model.get_weights()[2])
    with pytest.raises(saving.ModelFileError, match="weights only"):
        densekit.load_model(tmp_path / "w.npz")


def test_wrong_shapes_raise_a_clear_error(tmp_path):
    model = trained()
    model.save_weights(tmp_path / "w.npz")
    wider = densekit.Sequential([Input((6,)), Dense(17, "gelu"), Dropout(0.2), Dense(3)])
    with pytest.raises(
        saving.ModelFileError,
        match=r"weight 0 \(dense_?\d*/kernel\) has shape \(6, 16\), the model expects \(6, 17\)",
    ):
        wider.load_weights(tmp_path / "w.npz")
    shorter = densekit.Sequential([Input((6,)), Dense(3)])
    with pytest.raises(saving.ModelFileError, match="holds 4 weight arrays, the model has 2"):
        shorter.load_weights(tmp_path / "w.npz")


def test_corrupt_and_foreign_files_raise_a_clear_error(tmp_path):
    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    bad_header = tmp_path / "bad-header.npz"
    np.savez(bad_header, header=np.frombuffer(b"{not json", np.uint8))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    for bad in (truncated, garbage, foreign, bad_header, single):
        with pytest.raises(saving.ModelFileError, match=str(bad.name)):
            densekit.load_model(bad)
        assert issubclass(saving.ModelFileError, ValueError)
    with pytest.raises(FileNotFoundError, match="no such file"):
        densekit.load_model(tmp_path / "missing.npz")
    newer = tmp_path / "newer.npz"
    header = {"format": "densekit.model", "version": 99}
    np.savez(newer, header=np.frombuffer(json.dumps(header).encode(), np.uint8))
    with pytest.raises(saving.ModelFileError, match="newer densekit"):
        densekit.load_model(newer)
    # a file whose weights were swapped for the wrong shape
    tampered = tmp_path / "tampered.npz"
    with zipfile.ZipFile(path) as archive:
        entries = {name[:-4]: np.load(archive.open(name)) for name in archive.namelist()}
    entries["weight.0"] = np.zeros((2, 2), np.float32)
    np.savez(tampered, **entries)
    with pytest.raises(saving.ModelFileError, match="weight 0"):
        densekit.load_model(tampered)


def test_an_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = trained()
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    monkeypatch.undo()
    densekit.load_model(path)


def test_saving_an_unbuilt_model_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="build"):
        densekit.Sequential([Dense(2)]).save(tmp_path / "x.npz")
