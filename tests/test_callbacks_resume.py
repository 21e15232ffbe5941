"""BackupAndRestore (a run interrupted by an exception and refitted is bitwise the
uninterrupted run) and TensorBoard (the event files read back equal History)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import densekit
from densekit import callbacks, layers, optimizers, schedules

PYTHON_PATH = os.path.dirname(os.path.dirname(densekit.__file__))


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((50, 6)).astype(np.float32), rng.integers(0, 3, 50)


def make_model(optimizer):
    densekit.set_random_seed(1)
    model = densekit.Sequential(
        [
            densekit.Input((6,)),
            layers.Dense(8, "relu"),
            layers.Dropout(0.3),
            layers.Dense(3, "softmax"),
        ]
    )
    model.compile(optimizer, "sparse_categorical_crossentropy", ["accuracy"])
    return model


def stateful_callbacks(directory, plateau=True):
    """Callbacks whose state matters: EarlyStopping never sees an improvement (its wait
    grows; best weights kept), ReduceLROnPlateau halves the rate every other epoch (not
    with a schedule: the rate is the schedule's)."""
    kept = [callbacks.EarlyStopping("loss", min_delta=10, patience=100, restore_best_weights=True)]
    if plateau:
        kept.append(callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=10))
    else:
        kept.append(callbacks.ModelCheckpoint(directory / "best.npz", "loss", save_best_only=True))
    return kept


class Crash(callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("crash")


OPTIMIZERS = {
    "adam": lambda: optimizers.Adam(0.01, amsgrad=True),
    "sgd": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "scheduled": lambda: optimizers.Adam(schedules.ExponentialDecay(0.02, 4, 0.5)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("crash_at", [1, 3])
def test_a_crashed_run_resumes_bitwise(tmp_path, name, crash_at):
    x, y = data()
    plateau = name != "scheduled"
    reference = make_model(OPTIMIZERS[name]())
    kept = stateful_callbacks(tmp_path, plateau)
    history = reference.fit(
        x, y, batch_size=16, epochs=6, verbose=0, validation_split=0.2, callbacks=kept
    )

    model = make_model(OPTIMIZERS[name]())
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="crash"):
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=6,
            verbose=0,
            validation_split=0.2,
            callbacks=[
                callbacks.BackupAndRestore(backup),
                *stateful_callbacks(tmp_path, plateau),
                Crash(crash_at),
            ],
        )
    assert sorted(os.listdir(backup)) == [
        f"backup-model-{crash_at - 1}.npz",
        "backup-state.npz",
    ]
    densekit.set_random_seed(12345)  # another global generator: the backup's seed wins
    resumed_callbacks = stateful_callbacks(tmp_path, plateau)
    resumed = model.fit(
        x,
        y,
        batch_size=16,
        epochs=6,
        verbose=0,
        validation_split=0.2,
        callbacks=[callbacks.BackupAndRestore(backup), *resumed_callbacks],
    )
    assert resumed.epoch == list(range(crash_at, 6))
    for key, values in history.history.items():
        assert resumed.history[key] == values[crash_at:], key
    for a, b in zip(reference.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)
    iterations, state = reference.optimizer_state()
    resumed_iterations, resumed_state = model.optimizer_state()
    assert resumed_iterations == iterations == 6 * 3
    for key in state:
        assert np.array_equal(state[key], resumed_state[key])
    assert model.optimizer.learning_rate == reference.optimizer.learning_rate
    assert resumed_callbacks[0].wait == kept[0].wait == 5  # the first epoch is an improvement
    for a, b in zip(resumed_callbacks[0].best_weights, kept[0].best_weights):
        assert np.array_equal(a, b)
    assert resumed_callbacks[1].get_state() == kept[1].get_state()
    assert not backup.exists()  # removed when training ended


def test_the_backup_is_kept_on_request_and_a_finished_run_does_not_train_again(tmp_path):
    x, y = data()
    model = make_model("adam")
    backup = tmp_path / "backup"
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[callbacks.BackupAndRestore(backup, delete_checkpoint=False)],
    )
    assert sorted(os.listdir(backup)) == ["backup-model-1.npz", "backup-state.npz"]
    weights = model.get_weights()
    again = model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.BackupAndRestore(backup)])
    assert again.epoch == []
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def test_backup_arguments_are_checked(tmp_path):
    for save_freq in (0, -3, True, 2.5, "batch"):
        with pytest.raises(ValueError, match="save_freq"):
            callbacks.BackupAndRestore(tmp_path, save_freq=save_freq)
    assert callbacks.BackupAndRestore(tmp_path, save_freq=np.int64(10)).save_freq == 10
    with pytest.raises(TypeError, match="delete_checkpoint"):
        callbacks.BackupAndRestore(tmp_path, delete_checkpoint="yes")
    with pytest.raises(TypeError, match="double_checkpoint"):
        callbacks.BackupAndRestore(tmp_path, double_checkpoint=1)


class CrashAtBatch(callbacks.Callback):
    """Raises in the batch hook of (epoch, batch): before that batch's backup is written."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, batch) and batch == self.batch:
            raise RuntimeError("crash")


# 40 training rows in batches of 16: 3 batches an epoch, 18 in 6 epochs; backups after every
# 4th batch (counted across epochs, as Keras counts): after batches 3, 7, 11, 15 (0-based),
# i.e. (epoch 1, batch 0), (2, 1), (3, 2: the epoch's last), (5, 0).
@pytest.mark.parametrize(
    ("crash", "backup_file", "resumed_epochs"),
    [
        (CrashAtBatch(2, 2), "backup-model-2-1.npz", [2, 3, 4, 5]),  # resumes at (2, 2)
        (Crash(3), "backup-model-3-2.npz", [3, 4, 5]),  # resumes with epoch 3's batches done
    ],
    ids=["inside-an-epoch", "after-its-last-batch"],
)
@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_a_run_crashed_between_batches_resumes_bitwise(
    tmp_path, name, crash, backup_file, resumed_epochs
):
    x, y = data()
    fit = {"batch_size": 16, "epochs": 6, "verbose": 0, "validation_split": 0.2}
    reference = make_model(OPTIMIZERS[name]())
    kept = stateful_callbacks(tmp_path)
    history = reference.fit(x, y, **fit, callbacks=kept)

    model = make_model(OPTIMIZERS[name]())
    backup = tmp_path / "backup"

    def backup_callback():
        return callbacks.BackupAndRestore(backup, save_freq=4)

    with pytest.raises(RuntimeError, match="crash"):
        model.fit(x, y, **fit, callbacks=[backup_callback(), *stateful_callbacks(tmp_path), crash])
    assert sorted(os.listdir(backup)) == [backup_file, "backup-state.npz"]
    densekit.set_random_seed(12345)  # another global generator: the backup's seed wins
    resumed_callbacks = stateful_callbacks(tmp_path)
    resumed = model.fit(x, y, **fit, callbacks=[backup_callback(), *resumed_callbacks])
    assert resumed.epoch == resumed_epochs
    first = resumed_epochs[0]
    for key, values in history.history.items():  # the resumed epoch's metrics included
        assert resumed.history[key] == values[first:], key
    for a, b in zip(reference.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)
    iterations, state = reference.optimizer_state()
    resumed_iterations, resumed_state = model.optimizer_state()
    assert resumed_iterations == iterations == 18
    for key in state:
        assert np.array_equal(state[key], resumed_state[key])
    assert model.optimizer.learning_rate == reference.optimizer.learning_rate
    assert resumed_callbacks[1].get_state() == kept[1].get_state()
    assert not backup.exists()


def test_a_dataset_run_crashed_inside_an_epoch_resumes_bitwise(tmp_path):
    """A Dataset resumes after the batches of the backup's epoch it trained on already."""
    x, y = data()
    dataset = densekit.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 batches
    reference = make_model(OPTIMIZERS["adam"]())
    history = reference.fit(dataset, epochs=3, verbose=0)
    model = make_model(OPTIMIZERS["adam"]())
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="crash"):
        model.fit(
            dataset,
            epochs=3,
            verbose=0,
            callbacks=[callbacks.BackupAndRestore(backup, save_freq=3), CrashAtBatch(1, 3)],
        )
    assert sorted(os.listdir(backup)) == ["backup-model-1-1.npz", "backup-state.npz"]
    resumed = model.fit(
        dataset, epochs=3, verbose=0, callbacks=[callbacks.BackupAndRestore(backup, save_freq=3)]
    )
    assert resumed.epoch == [1, 2]
    for key, values in history.history.items():
        assert resumed.history[key] == values[1:], key
    for a, b in zip(reference.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)


def test_batch_backups_need_a_fit_of_one_process(tmp_path):
    x, y = data()
    model = make_model("sgd")
    with pytest.raises(ValueError, match="save_freq"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            strategy="hogwild",
            workers=2,
            callbacks=[callbacks.BackupAndRestore(tmp_path / "b", save_freq=2)],
        )
    # a backup taken inside an epoch is refused by a fit of another batch size
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError, match="crash"):
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[callbacks.BackupAndRestore(backup, save_freq=5), CrashAtBatch(0, 6)],
        )
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(
            x,
            y,
            batch_size=32,
            epochs=2,
            verbose=0,
            callbacks=[callbacks.BackupAndRestore(backup, save_freq=5)],
        )


def test_a_corrupt_backup_is_a_model_file_error(tmp_path):
    x, y = data()
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "backup-state.npz").write_bytes(b"not a zip")
    model = make_model("adam")
    with pytest.raises(densekit.saving.ModelFileError, match="backup"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.BackupAndRestore(backup)])


# -- TensorBoard ---------------------------------------------------------------------------
def read_scalars(directory) -> dict:
    """{tag: [(step, value), ...]} from the event files in ``directory`` (TFRecord framing:
    length, its CRC, the Event proto, its CRC), parsed with tensorboardX's protos."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    scalars: dict = {}
    for name in sorted(os.listdir(directory)):
        data = (directory / name).read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_scalars_equal_history(tmp_path):
    pytest.importorskip("tensorboardX")
    x, y = data()
    model = make_model(optimizers.SGD(0.1))
    board = callbacks.TensorBoard(tmp_path / "logs")
    history = model.fit(
        x,
        y,
        epochs=4,
        verbose=0,
        validation_split=0.2,
        callbacks=[
            callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=10),
            board,
        ],
    )
    train = read_scalars(tmp_path / "logs" / "train")
    validation = read_scalars(tmp_path / "logs" / "validation")
    for key, values in history.history.items():
        written = validation if key.startswith("val_") else train
        tag = "epoch_" + key.removeprefix("val_")
        assert [step for step, _ in written[tag]] == list(range(4))
        # event files hold float32
        np.testing.assert_array_equal(
            [value for _, value in written[tag]], np.float32(values), err_msg=key
        )
    assert "learning_rate" in history.history  # the plateau callback's, checked above
    assert history.history["learning_rate"][-1] < 0.1


def test_tensorboard_batch_scalars_and_histograms(tmp_path):
    pytest.importorskip("tensorboardX")
    x, y = data()
    model = make_model("adam")
    batches = []
    record = callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: batches.append(logs["loss"])
    )
    board = callbacks.TensorBoard(tmp_path / "logs", update_freq=2, histogram_freq=1)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[record, board])
    train = read_scalars(tmp_path / "logs" / "train")
    assert [step for step, _ in train["batch_loss"]] == [2, 4, 6, 8]
    np.testing.assert_array_equal(
        [value for _, value in train["batch_loss"]], np.float32(batches[1::2])
    )
    # without a callback logging it, the optimizer's rate
    assert train["epoch_learning_rate"] == [(0, np.float32(0.001)), (1, np.float32(0.001))]
    assert "epoch_loss" in train and not (tmp_path / "logs" / "validation").exists()


def test_tensorboard_arguments_are_checked(tmp_path):
    for bad in (0, "batch", True):
        with pytest.raises(ValueError, match="update_freq"):
            callbacks.TensorBoard(tmp_path, update_freq=bad)
    with pytest.raises(ValueError, match="histogram_freq"):
        callbacks.TensorBoard(tmp_path, histogram_freq=-1)


RUN = """
import os, sys
import numpy as np
import densekit
from densekit import callbacks, layers

mode, directory = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
x, y = rng.standard_normal((50, 6)).astype(np.float32), rng.integers(0, 3, 50)
densekit.set_random_seed(1)
model = densekit.Sequential(
    [densekit.Input((6,)), layers.Dense(8, "relu"), layers.Dropout(0.3), layers.Dense(3, "softmax")]
)
model.compile(densekit.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
kill = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 2 and os._exit(3))
used = {"reference": [], "killed": [kill], "resumed": []}[mode]
backup = [] if mode == "reference" else [callbacks.BackupAndRestore(os.path.join(directory, "b"))]
history = model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=backup + used)
model.save_weights(os.path.join(directory, mode + ".npz"))
print(history.epoch)
"""


def test_a_killed_process_resumes_bitwise(tmp_path):
    """The process dies (os._exit, no cleanup) at the end of epoch 2; a new process with
    the same script resumes at epoch 2 and ends with the uninterrupted run's weights."""
    environment = {**os.environ, "PYTHONPATH": PYTHON_PATH}

    def run(mode):
        return subprocess.run(
            [sys.executable, "-c", RUN, mode, str(tmp_path)],
            env=environment,
            capture_output=True,
            text=True,
        )

    assert run("reference").returncode == 0
    assert run("killed").returncode == 3
    assert sorted(os.listdir(tmp_path / "b")) == ["backup-model-1.npz", "backup-state.npz"]
    resumed = run("resumed")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "[2, 3, 4]"
    reference = densekit.Sequential([layers.Dense(8), layers.Dense(3)])
    reference.load_weights(tmp_path / "reference.npz")
    again = densekit.Sequential([layers.Dense(8), layers.Dense(3)])
    again.load_weights(tmp_path / "resumed.npz")
    for a, b in zip(reference.get_weights(), again.get_weights()):
        assert np.array_equal(a, b)


def test_double_checkpoint_falls_back_to_the_backup_before(tmp_path):
    x, y = data()
    reference = make_model("adam")
    reference.fit(x, y, batch_size=16, epochs=4, verbose=0)
    model = make_model("adam")
    backup = tmp_path / "backup"

    def run(*extra):
        kept = callbacks.BackupAndRestore(backup, double_checkpoint=True)
        return model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[kept, *extra])

    with pytest.raises(RuntimeError, match="crash"):
        run(Crash(3))
    assert sorted(os.listdir(backup)) == [
        "backup-model-1.npz",
        "backup-model-2.npz",
        "backup-state.npz",
        "backup-state.previous.npz",
    ]
    (backup / "backup-model-2.npz").write_bytes(b"damaged")
    with pytest.warns(RuntimeWarning, match="resuming from the backup before it"):
        resumed = run()
    assert resumed.epoch == [2, 3]
    for a, b in zip(reference.get_weights(), model.get_weights()):
        assert np.array_equal(a, b)
    assert not backup.exists()
