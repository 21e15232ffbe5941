"""Model files from a hostile world: bounded reads (config checked against the arrays' headers
before anything is built, unused entries never read, zip bombs and deep JSON refused), every
tampered header value a ModelFileError naming the file, and saves that keep file modes, write
through symbolic links and clean up after killed saves."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import densekit
from densekit import _archive, initializers, optimizers, regularizers, saving, schedules
from densekit.layers import Dense, Dropout, Input

PYTHON_PATH = os.path.dirname(os.path.dirname(densekit.__file__))


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 5)).astype(np.float32), rng.integers(0, 3, n)


def saved_model(path, optimizer=None):
    """A small trained model using every kind of config (initializers, regularizer,
    schedule, dropout, metrics), saved at ``path``."""
    densekit.set_random_seed(3)
    model = densekit.Sequential(
        [
            Input((5,)),
            Dense(
                8,
                "relu",
                kernel_initializer=initializers.VarianceScaling(2.0, "fan_avg", seed=1),
                bias_initializer=initializers.Constant(0.1),
                kernel_regularizer=regularizers.L2(1e-4),
            ),
            Dropout(0.25, seed=2),
            Dense(3, "softmax"),
        ],
        name="tamper",
    )
    rate = schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.9)
    model.compile(
        optimizer or optimizers.Adam(rate, amsgrad=True, clipnorm=1.0),
        "sparse_categorical_crossentropy",
        ["accuracy"],
    )
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(path)
    return model


def entries_of(path) -> dict:
    """The raw bytes of every entry of an archive, by name (without .npy)."""
    with zipfile.ZipFile(path) as archive:
        return {name[:-4]: archive.read(name) for name in archive.namelist()}


def header_of(path) -> dict:
    return json.loads(np.load(io.BytesIO(entries_of(path)["header"])).tobytes())


def write_entries(path, entries: dict, compressed=()) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in entries.items():
            method = zipfile.ZIP_DEFLATED if name in compressed else zipfile.ZIP_STORED
            archive.writestr(name + ".npy", raw, compress_type=method)


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def with_header(source, target, header) -> None:
    """Copy the archive ``source`` to ``target`` with ``header`` as its JSON header."""
    entries = entries_of(source)
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    entries["header"] = npy_bytes(np.frombuffer(text, np.uint8))
    write_entries(target, entries)


def peak_memory_of(function) -> int:
    """Peak bytes allocated by ``function`` (NumPy's buffers included), whatever it raises."""
    tracemalloc.start()
    try:
        function()
    except saving.ModelFileError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# -- 4. bounded reads ----------------------------------------------------------------------
@pytest.mark.parametrize("units", [2_000_000, 10**7, 10**12])
def test_a_config_asking_for_huge_weights_fails_before_allocating(tmp_path, units):
    path = tmp_path / "model.npz"
    saved_model(path)
    header = header_of(path)
    header["model"]["layers"][1]["config"]["units"] = units
    tampered = tmp_path / "huge.npz"
    with_header(path, tampered, header)
    assert tampered.stat().st_size < 16 * 2**10
    with pytest.raises(saving.ModelFileError, match=r"huge\.npz"):
        densekit.load_model(tampered)
    assert peak_memory_of(lambda: densekit.load_model(tampered)) < 2**20
    # the same for a weights-only load into a model that the file's input width would build
    model = densekit.Sequential([Dense(units), Dense(3)])
    with pytest.raises(saving.ModelFileError, match=r"huge\.npz"):
        model.load_weights(tampered)


def test_huge_input_dim_fails_before_allocating(tmp_path):
    path = tmp_path / "model.npz"
    saved_model(path)
    header = header_of(path)
    header["model"]["input_dim"] = 10**9
    del header["model"]["layers"][0]  # no Input layer to disagree with
    tampered = tmp_path / "wide.npz"
    with_header(path, tampered, header)
    assert peak_memory_of(lambda: densekit.load_model(tampered)) < 2**20
    with pytest.raises(saving.ModelFileError, match=r"wide\.npz: weight 0 .* \(5, 8\)"):
        densekit.load_model(tampered)


def test_unused_entries_are_never_read(tmp_path):
    path = tmp_path / "model.npz"
    saved_model(path)
    padded = tmp_path / "padded.npz"
    padded.write_bytes(path.read_bytes())
    with zipfile.ZipFile(padded, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.npy", "w", force_zip64=True) as entry:
            header = {"descr": "|u1", "fortran_order": False, "shape": (128 * 2**20,)}
            np.lib.format.write_array_header_1_0(entry, header)
            chunk = bytes(2**20)
            for _ in range(128):
                entry.write(chunk)
    assert padded.stat().st_size < 2**20
    assert peak_memory_of(lambda: densekit.load_model(padded)) < 2**20
    densekit.load_model(padded)  # an extra entry the format does not name is ignored


def test_compressed_and_oversized_entries_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    saved_model(path)
    entries = entries_of(path)
    deflated = tmp_path / "deflated.npz"
    write_entries(deflated, entries, compressed={"weight.0"})
    with pytest.raises(
        saving.ModelFileError, match=r"deflated\.npz: entry 'weight\.0' is compressed"
    ):
        densekit.load_model(deflated)
    # a .npy header claiming the config's shape over too few bytes of data
    short = dict(entries, **{"weight.0": entries["weight.0"][:-8]})
    truncated = tmp_path / "short.npz"
    write_entries(truncated, short)
    with pytest.raises(saving.ModelFileError, match=r"short\.npz: entry 'weight\.0': shape"):
        densekit.load_model(truncated)
    # a float array where the header must be bytes, an object array where weights must be
    for name, array in [("header", np.zeros(3)), ("weight.1", np.array([None] * 8, object))]:
        odd = tmp_path / f"odd-{name}.npz"
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=True)
        write_entries(odd, dict(entries, **{name: buffer.getvalue()}))
        with pytest.raises(saving.ModelFileError, match=rf"odd-{name}\.npz"):
            densekit.load_model(odd)


def test_entries_claiming_more_than_the_file_holds_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    saved_model(path)
    raw = bytearray(path.read_bytes())
    record = raw.index(b"PK\x01\x02")
    while raw[record + 46 : record + 46 + len(b"weight.0.npy")] != b"weight.0.npy":
        record = raw.index(b"PK\x01\x02", record + 4)
    for offset in (20, 24):  # the central directory's compressed and uncompressed sizes
        raw[record + offset : record + offset + 4] = (2**31).to_bytes(4, "little")
    inflated = tmp_path / "inflated.npz"
    inflated.write_bytes(bytes(raw))
    with pytest.raises(saving.ModelFileError, match=r"inflated\.npz: entries claim \d+ bytes"):
        densekit.load_model(inflated)
    assert peak_memory_of(lambda: densekit.load_model(inflated)) < 2**20


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    (tmp_path / "dir.npz").mkdir()
    for path in (fifo, tmp_path / "dir.npz"):
        outcome = []

        def load(path=path, outcome=outcome):
            try:
                densekit.load_model(path)
            except Exception as error:
                outcome.append(error)

        loader = threading.Thread(target=load, daemon=True)  # a blocked open must not hang pytest
        loader.start()
        loader.join(timeout=30)
        assert not loader.is_alive(), f"load_model({path}) blocked"
        assert isinstance(outcome[0], saving.ModelFileError) and str(path) in str(outcome[0])


def test_deep_or_huge_json_headers_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    saved_model(path)
    deep = tmp_path / "deep.npz"
    with_header(
        path, deep, b'{"format": "densekit.model", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    )
    with pytest.raises(saving.ModelFileError, match=r"deep\.npz: .*nested 100001 deep"):
        densekit.load_model(deep)
    brackets_in_strings = header_of(path)
    brackets_in_strings["densekit_version"] = "[{" * 1000
    quoted = tmp_path / "quoted.npz"
    with_header(path, quoted, brackets_in_strings)
    densekit.load_model(quoted)  # brackets inside strings are not nesting
    big = header_of(path)
    big["densekit_version"] = "x" * (_archive.MAX_HEADER_BYTES + 1)
    huge = tmp_path / "huge-header.npz"
    with_header(path, huge, big)
    with pytest.raises(saving.ModelFileError, match=r"huge-header\.npz: .*more than"):
        densekit.load_model(huge)


# -- 5. every tampered header value is a ModelFileError naming the file ------------------------
def _locations(value, where=()):
    """Every location in a JSON document, as a tuple of keys and indices."""
    yield where
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _locations(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _locations(item, (*where, index))


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


REPLACEMENTS = [
    None,
    True,
    -5,
    0,
    10**12,
    2**64,
    -1.5,
    1e308,
    float("nan"),
    float("inf"),
    "x",
    [],
    {},
    [1, "a"],
    {"class_name": "Dense", "config": {}},
    _nested(40),
]


def _tampered_headers(header):
    """(description, header) for every location and every way of spoiling it."""
    for where in _locations(header):
        if not where:
            continue
        *parents, last = where
        for replacement in [*REPLACEMENTS, "<deleted>", "<extra key>", "<wrapped>"]:
            changed = copy.deepcopy(header)
            parent = changed
            for key in parents:
                parent = parent[key]
            original = parent[last]
            if replacement == "<deleted>":
                if not isinstance(parent, dict):
                    continue
                del parent[last]
            elif replacement == "<extra key>":
                if not isinstance(original, dict):
                    continue
                original["extra"] = 1
            elif replacement == "<wrapped>":
                parent[last] = [original]
            else:
                parent[last] = copy.deepcopy(replacement)
            yield f"{'/'.join(map(str, where))} = {replacement!r:.40}", changed


def _check_tampered_files(tmp_path, source, load, use):
    header = header_of(source)
    target = tmp_path / "tampered.npz"
    loaded = refused = 0
    for description, changed in _tampered_headers(header):
        with_header(source, target, changed)
        try:
            model = load(target)
        except saving.ModelFileError as error:
            assert str(target) in str(error), description
            refused += 1
        except Exception as error:
            pytest.fail(f"{description}: {type(error).__name__}: {error}")
        else:
            try:
                use(model)  # a file that loads must also work
            except Exception as error:
                pytest.fail(f"{description}: loaded, then {type(error).__name__}: {error}")
            loaded += 1
    return loaded, refused


def _predict_and_fit(model):
    x, y = data(8)
    model.predict(x, verbose=0)
    if model.compiled:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_every_tampered_model_header_value_is_a_model_file_error(tmp_path):
    source = tmp_path / "model.npz"
    saved_model(source)
    loaded, refused = _check_tampered_files(tmp_path, source, densekit.load_model, _predict_and_fit)
    assert refused > 10 * loaded  # the few that load changed only names and free-form text


def test_every_tampered_weights_header_value_is_a_model_file_error(tmp_path):
    source = tmp_path / "weights.npz"
    saved_model(tmp_path / "model.npz").save_weights(source)

    def load(path):
        model = densekit.Sequential([Dense(8, "relu"), Dropout(0.25), Dense(3, "softmax")])
        model.load_weights(path)
        return model

    _check_tampered_files(tmp_path, source, load, lambda model: model.predict(data(4)[0]))


@pytest.mark.parametrize(
    "location, value",
    [
        (("optimizer_state", "iterations"), -5),
        (("optimizer_state", "iterations"), 2.5),
        (("optimizer_state", "iterations"), 2**70),
        (("model", "layers", 1, "config", "units"), "8"),
        (("model", "layers", 1, "config", "use_bias"), 1),
        (("compile", "optimizer", "config", "amsgrad"), "yes"),
        (("compile", "optimizer", "config", "learning_rate", "config", "staircase"), 0),
        (("rng_states", "dropout", "state", "state"), -1),
        (("model", "dtype"), "int8"),
        (("model", "layers", 1, "config", "dtype"), "complex128"),
    ],
)
def test_wrong_values_are_refused_at_load(tmp_path, location, value):
    source = tmp_path / "model.npz"
    model = saved_model(source)
    header = header_of(source)
    *parents, last = location
    parent = header
    for key in parents:
        if key == "dropout":
            key = model.layers[1].name
        parent = parent[key]
    parent[last] = value
    target = tmp_path / "bad.npz"
    with_header(source, target, header)
    with pytest.raises(saving.ModelFileError, match=r"bad\.npz"):
        densekit.load_model(target)


def test_every_registered_optimizer_round_trips(tmp_path):
    for optimizer in [
        optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        optimizers.SGD(),
        optimizers.RMSprop(centered=True, momentum=0.5),
        optimizers.AdamW(global_clipnorm=2.0),
        optimizers.Adam(schedules.CosineDecay(0.1, 100, warmup_target=0.2, warmup_steps=5)),
    ]:
        model = saved_model(tmp_path / "model.npz", optimizer)
        again = densekit.load_model(tmp_path / "model.npz")
        assert again.optimizer.get_config() == model.optimizer.get_config()
        for a, b in zip(again.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)


# -- 6. modes, symbolic links, temporary files -------------------------------------------------
@pytest.fixture
def model():
    densekit.set_random_seed(0)
    model = densekit.Sequential([Input((4,)), Dense(3)])
    return model


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000, 0o027])
def test_new_files_get_the_umask_mode(tmp_path, model, umask):
    previous = os.umask(umask)
    try:
        model.save(tmp_path / "model.npz")
        model.save_weights(tmp_path / "weights.npz")
    finally:
        os.umask(previous)
    for name in ("model.npz", "weights.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_replaced_files_keep_their_mode(tmp_path, model, mode):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    path.chmod(mode)
    previous = os.umask(0o077)
    try:
        model.save(path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == mode
    densekit.load_model(path)


def test_saving_through_a_symbolic_link_writes_its_target(tmp_path, model):
    (tmp_path / "store").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "store" / "model-v1.npz"
    target.write_bytes(b"old")
    target.chmod(0o644)
    link = tmp_path / "links" / "current.npz"
    link.symlink_to(os.path.join("..", "store", "model-v1.npz"))
    model.save(link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "store", "model-v1.npz")
    assert target.stat().st_mode & 0o777 == 0o644
    np.testing.assert_array_equal(densekit.load_model(target).get_weights()[0], model.weights[0])
    assert sorted(os.listdir(tmp_path / "store")) == ["model-v1.npz"]
    assert sorted(os.listdir(tmp_path / "links")) == ["current.npz"]
    dangling = tmp_path / "links" / "next.npz"
    dangling.symlink_to(os.path.join("..", "store", "model-v2.npz"))
    model.save_weights(dangling)
    assert dangling.is_symlink() and (tmp_path / "store" / "model-v2.npz").is_file()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporary_files_of_the_same_path_are_removed(tmp_path, model):
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = _archive.temporary_name("model.npz", dead)
        live = _archive.temporary_name("model.npz", sleeper.pid)
        elsewhere = _archive.temporary_name("model.npz", dead, host="another-host")
        other_file = _archive.temporary_name("other.npz", dead)
        unrelated = f".model.npz.{dead}.tmp"
        for name in (stale, live, elsewhere, other_file, unrelated):
            (tmp_path / name).write_bytes(b"partial")
        model.save(tmp_path / "model.npz")
        left = set(os.listdir(tmp_path))
        assert stale not in left
        assert {live, elsewhere, other_file, unrelated, "model.npz"} == left
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_save_killed_midway_is_cleaned_up_by_the_next(tmp_path, model):
    path = tmp_path / "model.npz"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {PYTHON_PATH!r})
        import densekit
        from densekit.layers import Dense, Input
        model = densekit.Sequential([Input((500,)), Dense(4000)])
        print("ready", flush=True)
        while True:
            model.save({str(path)!r})
        """
    )
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 30
        while not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]:
            assert time.monotonic() < deadline
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        if [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]:
            break  # killed while the temporary file existed (else it was just renamed: retry)
    else:
        pytest.fail("never killed a save midway")
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]
    densekit.load_model(path)


def test_concurrent_saves_of_one_path_all_succeed(tmp_path):
    path = tmp_path / "model.npz"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {PYTHON_PATH!r})
        import densekit
        from densekit.layers import Dense, Input
        model = densekit.Sequential([Input((200,)), Dense(500)])
        for _ in range(30):
            model.save({str(path)!r})
        """
    )
    children = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0]
    assert os.listdir(tmp_path) == ["model.npz"]
    densekit.load_model(path)


HEADS = {  # a last layer (or two) and targets for each registered loss
    "MeanSquaredError": ([Dense, 1, None], "values"),
    "MeanAbsoluteError": ([Dense, 1, None], "values"),
    "Huber": ([Dense, 1, None], "values"),
    "BinaryCrossentropy": ([Dense, 1, "sigmoid"], "binary"),
    "CategoricalCrossentropy": ([Dense, 3, None, "softmax"], "one-hot"),
    "SparseCategoricalCrossentropy": ([Dense, 3, "softmax"], "labels"),
    "BinaryFocalCrossentropy": ([Dense, 1, "sigmoid"], "binary"),
    "CategoricalFocalCrossentropy": ([Dense, 3, "softmax"], "one-hot"),
    "CategoricalHinge": ([Dense, 3, None], "one-hot"),
    "CosineSimilarity": ([Dense, 3, None], "one-hot"),
    "Hinge": ([Dense, 1, "tanh"], "binary"),
    "SquaredHinge": ([Dense, 1, "tanh"], "binary"),
    "KLDivergence": ([Dense, 3, "softmax"], "one-hot"),
    "LogCosh": ([Dense, 1, None], "values"),
    "MeanAbsolutePercentageError": ([Dense, 1, None], "values"),
    "MeanSquaredLogarithmicError": ([Dense, 1, "softplus"], "values"),
    "Poisson": ([Dense, 1, "softplus"], "values"),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_registered_config_survives_the_checks(tmp_path, dtype):
    """The header checks rebuild every config and compare: no file densekit writes may fail."""
    from densekit import losses, metrics
    from densekit.layers import Activation

    x, y = data(16)
    targets = {
        "values": y[:, None].astype(float),
        "binary": (y[:, None] > 0).astype(float),
        "one-hot": np.eye(3)[y],
        "labels": y,
    }
    kernels = [cls() for cls in initializers._BY_CLASS.values()]
    metric_names = {"labels": ["accuracy"], "binary": ["accuracy", "mse"]}
    metric_objects = {
        "labels": [metrics.SparseCategoricalAccuracy()],
        "one-hot": [metrics.CategoricalAccuracy(), metrics.MeanSquaredError()],
        "binary": [metrics.BinaryAccuracy()],
    }
    for index, (name, loss_class) in enumerate(sorted(losses._BY_CLASS.items())):
        (layer, units, activation, *after), kind = HEADS[name]
        head = [layer(units, activation), *(Activation(a) for a in after)]
        body = [
            Dense(
                6, "tanh", kernel_initializer=kernels[index % len(kernels)], kernel_regularizer="l2"
            ),
            Dense(4, kernel_initializer=kernels[(index + 6) % len(kernels)], use_bias=False),
            Dropout(0.1),
        ]
        first = [Input((5,))] if index % 2 else []  # half the models are built by fit
        model = densekit.Sequential(first + body + head, dtype=dtype)
        model.compile(
            "rmsprop",
            loss_class(),
            metric_names.get(kind, ["mae"])
            + metric_objects.get(kind, [metrics.MeanAbsoluteError()]),
        )
        model.fit(x, targets[kind], batch_size=8, epochs=1, verbose=0)
        path = tmp_path / f"{name}.npz"
        model.save(path)
        again = densekit.load_model(path)
        assert again.get_config() == model.get_config()
        assert again.get_compile_config() == model.get_compile_config()
        np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_check_finite_round_trips_and_only_true_is_accepted(tmp_path):
    model = densekit.Sequential([Input((4,)), Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", check_finite=True)
    model.fit(np.ones((8, 4), np.float32), np.zeros(8, np.int64), verbose=0)
    path = tmp_path / "finite.npz"
    model.save(path)
    assert densekit.load_model(path).check_finite is True
    header = header_of(path)
    header["compile"]["check_finite"] = "yes"
    tampered = tmp_path / "tampered.npz"
    with_header(path, tampered, header)
    with pytest.raises(saving.ModelFileError, match=str(tampered)):
        densekit.load_model(tampered)


@pytest.mark.parametrize(
    "make_optimizer, torch_velocity",
    [
        # torch's SGD velocity held gradients, Keras's holds -lr * g
        (lambda: optimizers.SGD(0.1, momentum=0.9), lambda v, lr: v / -lr),
        # torch's RMSprop buffer held unscaled steps, Keras's lr times them
        (lambda: optimizers.RMSprop(0.01, momentum=0.5), lambda v, lr: v / lr),
    ],
    ids=["sgd", "rmsprop"],
)
def test_files_from_torch_rules_resume_with_their_momentum_converted(
    tmp_path, make_optimizer, torch_velocity
):
    # A file written before the optimizers followed Keras: its optimizer config lacks the
    # Keras options and its momentum buffer has torch's meaning. It loads, and its buffer
    # is converted to the Keras meaning at the rate of the next step.
    model = densekit.Sequential([Input((5,)), Dense(4, "tanh"), Dense(3, "softmax")])
    optimizer = make_optimizer()
    model.compile(optimizer, "sparse_categorical_crossentropy")
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "new.npz")
    header = header_of(tmp_path / "new.npz")
    config = header["compile"]["optimizer"]["config"]
    for key in ("clipvalue", "use_ema", "ema_momentum", "ema_overwrite_frequency"):
        del config[key]
    del config["gradient_accumulation_steps"]
    with_header(tmp_path / "new.npz", tmp_path / "legacy.npz", header)
    entries = entries_of(tmp_path / "legacy.npz")
    velocity = optimizer.variables["velocity"]
    legacy = torch_velocity(velocity.astype(np.float64), optimizer.learning_rate)
    entries["optimizer.velocity"] = npy_bytes(legacy.astype(velocity.dtype))
    write_entries(tmp_path / "legacy.npz", entries)

    loaded = densekit.load_model(tmp_path / "legacy.npz")
    assert loaded.optimizer.get_config() == optimizer.get_config()
    np.testing.assert_allclose(loaded.optimizer.variables["velocity"], velocity, rtol=1e-6)
    current = densekit.load_model(tmp_path / "new.npz")  # a current file: unchanged bits
    np.testing.assert_array_equal(current.optimizer.variables["velocity"], velocity)
