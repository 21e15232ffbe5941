"""Callbacks with Keras's names and hooks, and the tqdm progress bar of fit/evaluate/predict.

Hooks receive ``logs`` dicts as in Keras: epoch logs hold ``"loss"``, each metric's name and
their ``"val_"`` forms; batch logs hold the running means of the epoch so far. Batch hooks cost time
on every step, so the model calls them only when some callback overrides one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
import warnings
import zipfile
from typing import ClassVar, NamedTuple

import numpy as np

_BATCH_HOOKS = {
    "train": ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end"),
    "test": ("on_test_batch_begin", "on_test_batch_end"),
    "predict": ("on_predict_batch_begin", "on_predict_batch_end"),
}


class Callback:
    """Base class: override the hooks you need. ``self.model`` and ``self.params`` are set
    before training (params: 'verbose', 'epochs', 'steps')."""

    def __init__(self):
        self.model = None
        self.params: dict = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict) -> None:
        self.params = params

    def get_state(self) -> dict | None:
        """What ``BackupAndRestore`` keeps of this callback between epochs: a dict of
        JSON values and lists of arrays (None: nothing; the base class keeps nothing)."""
        return None

    def set_state(self, state: dict) -> None:
        """Take back what ``get_state`` returned (when ``BackupAndRestore`` resumes)."""

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_test_begin(self, logs=None): ...
    def on_test_end(self, logs=None): ...
    def on_predict_begin(self, logs=None): ...
    def on_predict_end(self, logs=None): ...

    def on_batch_begin(self, batch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_test_batch_begin(self, batch, logs=None): ...
    def on_test_batch_end(self, batch, logs=None): ...
    def on_predict_batch_begin(self, batch, logs=None): ...
    def on_predict_batch_end(self, batch, logs=None): ...


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _overrides(callback: Callback, hook: str) -> bool:
    return hook in vars(callback) or getattr(type(callback), hook) is not getattr(Callback, hook)


def overrides_batch_hooks(callback: Callback, mode: str) -> bool:
    """Whether ``callback`` overrides a batch hook of ``mode`` ("train", "test" or
    "predict")."""
    return any(_overrides(callback, hook) for hook in _BATCH_HOOKS[mode])


class CallbackList:
    """Calls a hook on every callback; ``batch_hooks[mode]`` says whether any overrides the
    batch hooks of that mode (the model skips building batch logs otherwise)."""

    def __init__(self, callbacks, model, params: dict):
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(
                    f"callbacks: expected densekit.callbacks.Callback objects, got {callback!r}"
                )
            callback.set_model(model)
            callback.set_params(params)
        self.batch_hooks = {
            mode: any(_overrides(c, hook) for c in self.callbacks for hook in hooks)
            for mode, hooks in _BATCH_HOOKS.items()
        }
        # BackupAndRestore(save_freq=N): fit calls after_train_batch after every step
        self.batch_backups = [
            c for c in self.callbacks if isinstance(c, BackupAndRestore) and c.save_freq != "epoch"
        ]

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    # Every hook gets a logs dict, as in Keras (callbacks may add keys to it).
    def on_train_begin(self, logs=None):
        self._call("on_train_begin", {} if logs is None else logs)

    def on_train_end(self, logs=None):
        self._call("on_train_end", {} if logs is None else logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", epoch, {} if logs is None else logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        self._call("on_epoch_end", epoch, logs)
        for callback in self.callbacks:  # after every callback's epoch end: their state too
            if isinstance(callback, BackupAndRestore) and callback.save_freq == "epoch":
                callback.back_up(epoch, self.callbacks)

    def after_train_batch(self, epoch: int, batch: int, loss_total: float, seen: int) -> None:
        """After training step ``batch`` of ``epoch`` and its hooks: the batch backups that
        are due (``BackupAndRestore(save_freq=N)``), with the epoch's running loss (the sum
        of the batches' losses times their sizes) and its sample count."""
        for callback in self.batch_backups:
            callback.batch_done(epoch, batch, loss_total, seen, self.callbacks)

    def resume(self, initial_epoch: int, seed: int) -> tuple[int, int, ResumePoint | None]:
        """The first epoch and shuffle seed of this fit, and where in that epoch it starts:
        those of the backup a BackupAndRestore restored (weights, optimizer, callbacks' and
        metrics' state), else as given (and None: at the epoch's start)."""
        point = None
        for callback in self.callbacks:
            if isinstance(callback, BackupAndRestore):
                initial_epoch, seed, point = callback.restore(initial_epoch, seed, self.callbacks)
        return initial_epoch, seed, point

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", {} if logs is None else logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", {} if logs is None else logs)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", {} if logs is None else logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", {} if logs is None else logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._call("on_train_batch_begin", batch, {} if logs is None else logs)

    def on_train_batch_end(self, batch, logs=None):
        self._call("on_train_batch_end", batch, {} if logs is None else logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call("on_test_batch_begin", batch, {} if logs is None else logs)

    def on_test_batch_end(self, batch, logs=None):
        self._call("on_test_batch_end", batch, {} if logs is None else logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call("on_predict_batch_begin", batch, {} if logs is None else logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._call("on_predict_batch_end", batch, {} if logs is None else logs)


def configure(callbacks, model, verbose: int, *, epochs: int, steps, mode: str, after=()):
    """The hooks of one fit, evaluate or predict run, and its progress logger.

    Parameters
    ----------
    callbacks : list of Callback or None
        The user's callbacks; they run first, in their order.
    model : densekit.Sequential
        Given to every callback.
    verbose : int
        0, 1 or 2 (resolved): fit shows progress for 1 (a bar) and 2 (a line per epoch),
        evaluate and predict for 1.
    epochs : int
        The run's epochs (1 for evaluate and predict).
    steps : int or None
        Steps per epoch, if known.
    mode : {"fit", "evaluate", "predict"}
        The kind of run.
    after : tuple of Callback
        Callbacks that run after the progress logger (fit's History, a job's progress).

    Returns
    -------
    tuple
        ``(CallbackList, ProgbarLogger or None)``.
    """
    objects = list(callbacks or [])
    progress = None
    if verbose if mode == "fit" else verbose == 1:
        progress = ProgbarLogger(verbose)
        objects.append(progress)
    objects.extend(after)
    params = {"verbose": verbose, "epochs": epochs, "steps": steps, "mode": mode}
    return CallbackList(objects, model, params), progress


class History(Callback):
    """Records the epoch logs: ``history`` maps each key to its list of values."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        self.model.history = self


def _format_logs(logs: dict) -> str:
    return " - ".join(f"{key}: {_format_value(value)}" for key, value in logs.items())


def _format_value(value) -> str:
    """A number with 4 decimals; a metric with one value per class or threshold (F1Score
    with average=None, Precision with several thresholds) as its array."""
    if np.ndim(value) == 0:
        return f"{value:.4f}"
    return np.array2string(np.asarray(value), precision=4, separator=", ")


def resolve_verbose(verbose) -> int:
    """Keras's "auto": a progress bar on a terminal or in a notebook, else a line per epoch."""
    if verbose == "auto":
        return 1 if _interactive() else 2
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose: expected 'auto', 0, 1 or 2, got {verbose!r}")
    return verbose


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class ProgbarLogger(Callback):
    """verbose=1: a tqdm bar per epoch (or per evaluate/predict run) with the running loss and
    metrics and an ETA; tqdm.auto draws a widget in a notebook. verbose=2: one line per epoch,
    fit for log files. The postfix is formatted at most every ``refresh`` seconds, so the bar
    costs well under a microsecond per step."""

    def __init__(self, verbose=1, refresh=0.2):
        super().__init__()
        self.verbose = verbose
        self.refresh = refresh
        self._bar = None

    def _open(self, total, desc):
        if self.verbose != 1:
            return
        from tqdm.auto import tqdm  # lazily: the kernels work without tqdm

        self._bar = tqdm(
            total=total, desc=desc, unit="step", file=sys.stdout, dynamic_ncols=True, leave=True
        )
        self._next_postfix = time.perf_counter() + self.refresh

    def advance(self, logs_of, steps: int = 1) -> None:
        """``steps`` steps done; ``logs_of()`` gives the running logs when the postfix is
        redrawn."""
        bar = self._bar
        if bar is None:
            return
        now = time.perf_counter()
        if now >= self._next_postfix:
            self._next_postfix = now + self.refresh
            bar.set_postfix_str(_format_logs(logs_of()), refresh=False)
        bar.update(steps)

    def _close(self, logs):
        if self._bar is not None:
            self._bar.set_postfix_str(_format_logs(logs), refresh=False)
            self._bar.close()
            self._bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._open(self.params.get("steps"), f"Epoch {epoch + 1}/{self.params.get('epochs')}")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._close(logs)
        if self.verbose == 2:
            seconds = time.perf_counter() - self._epoch_start
            steps = self.params.get("steps") or 1
            parts = [f"{seconds:.2f}s", f"{seconds / steps * 1e3:.2f}ms/step"]
            if logs:
                parts.append(_format_logs(logs))
            print(
                f"Epoch {epoch + 1}/{self.params.get('epochs')} - " + " - ".join(parts), flush=True
            )

    def on_test_begin(self, logs=None):
        if self.params.get("mode") == "evaluate":
            self._open(self.params.get("steps"), "Evaluate")

    def on_test_end(self, logs=None):
        if self.params.get("mode") == "evaluate":
            self._close(logs or {})

    def on_predict_begin(self, logs=None):
        self._open(self.params.get("steps"), "Predict")

    def on_predict_end(self, logs=None):
        self._close({})


def _monitor_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":  # the metrics that grow as the model improves, as Keras's direction
        name = re.sub(r"_\d+$", "", monitor)  # a repeated metric's key: auc_1
        better_higher = (
            *("acc", "accuracy", "auc", "precision", "recall"),
            *("f1_score", "fbeta_score", "f_beta_score", "r2_score"),
        )
        return "max" if name.endswith(better_higher) else "min"
    return mode


def _monitored(logs, monitor, callback) -> float | None:
    value = (logs or {}).get(monitor)
    if value is None:
        available = ", ".join(sorted(logs or {}))
        warnings.warn(
            f"{callback} is conditioned on '{monitor}', which is not in the logs "
            f"(available: {available})",
            RuntimeWarning,
            stacklevel=3,
        )
    return value


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved by ``min_delta`` for ``patience``
    epochs. With ``restore_best_weights`` the weights of the best epoch are put back when
    training ends (Keras 3: whether or not it stopped early)."""

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__()
        self.monitor = monitor
        self.mode = _monitor_mode(mode, monitor)
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = int(start_from_epoch)

    def _improves(self, value, reference) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_from_epoch:
            return
        current = _monitored(logs, self.monitor, "EarlyStopping")
        if current is None:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._improves(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    _STATE = ("wait", "stopped_epoch", "best", "best_epoch", "best_weights")

    def get_state(self) -> dict:
        return {key: getattr(self, key, None) for key in self._STATE}

    def set_state(self, state: dict) -> None:
        for key in self._STATE:
            setattr(self, key, state[key])

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                epoch = self.best_epoch + 1
                print(f"Restoring model weights from the end of the best epoch: {epoch}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model (or its weights) after every epoch, or only when ``monitor`` improves
    (``save_best_only``). ``filepath`` may hold ``{epoch}`` and log keys, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``. Writes are atomic."""

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"save_freq: only 'epoch' is supported, got {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.mode = _monitor_mode(mode, monitor)
        self.best = initial_value_threshold

    def _improves(self, value) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def get_state(self) -> dict:
        return {"best": self.best}

    def set_state(self, state: dict) -> None:
        self.best = state["best"]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = _monitored(logs, self.monitor, "ModelCheckpoint")
            if current is None or not self._improves(current):
                return
            if self.verbose > 0:
                print(
                    f"Epoch {epoch + 1}: {self.monitor} improved from {self.best} to "
                    f"{current}, saving to {path}"
                )
            self.best = current
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to ``schedule(epoch, lr)``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        try:
            rate = self.schedule(epoch, optimizer.learning_rate)
        except TypeError:  # Keras also accepts schedule(epoch)
            rate = self.schedule(epoch)
        if not isinstance(rate, (float, int, np.floating, np.integer)) or isinstance(rate, bool):
            raise ValueError(
                f'The output of the "schedule" function should be a float, got {rate!r}'
            )
        optimizer.learning_rate = float(rate)
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {rate}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs, then waits ``cooldown`` epochs; never below
    ``min_lr``."""

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__()
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor!r}")
        self.monitor = monitor
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _monitor_mode(mode, monitor)
        self.min_delta = float(min_delta)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs=None):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def get_state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]
        self.cooldown_counter = state["cooldown_counter"]

    def _improves(self, value) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = optimizer.learning_rate
        current = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improves(current):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = optimizer.learning_rate
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    optimizer.learning_rate = new
                    if self.verbose > 0:
                        print(
                            f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}."
                        )
                    self.cooldown_counter = self.cooldown
                    self.wait = 0


class TerminateOnNaN(Callback):
    """Stops training as soon as a batch's running loss is NaN or infinite.

    As in Keras it acts after the batch's update, which has written NaN into the weights;
    ``model.compile(..., check_finite=True)`` refuses such a step before its update instead.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Writes one row per epoch (epoch, then the log keys sorted) to a CSV file."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._file = None

    def on_train_begin(self, logs=None):
        exists = (
            self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        )
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._keys = None
        self._header_written = exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(
                self._file, fieldnames=["epoch", *self._keys], delimiter=self.separator
            )
            if not self._header_written:
                self._writer.writeheader()
        row = {"epoch": epoch, **{key: logs.get(key, "NA") for key in self._keys}}
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.
    Any hook name is accepted (on_train_begin, on_batch_end, on_test_batch_end, ...)."""

    def __init__(self, **hooks):
        super().__init__()
        for name, function in hooks.items():
            if not hasattr(Callback, name) or not name.startswith("on_"):
                raise TypeError(f"{name}: not a callback hook")
            if function is not None:
                setattr(self, name, function)
        if "on_batch_begin" in vars(self) and "on_train_batch_begin" not in vars(self):
            self.on_train_batch_begin = self.on_batch_begin
        if "on_batch_end" in vars(self) and "on_train_batch_end" not in vars(self):
            self.on_train_batch_end = self.on_batch_end


class ResumePoint(NamedTuple):
    """Where a fit resumes inside an epoch (a backup taken after a batch): the next step and
    the epoch's running loss (the sum of the batches' losses times their sizes) and sample
    count up to it."""

    step: int
    loss_total: float
    seen: int


class BackupAndRestore(Callback):
    """Backs the run up after every epoch (or every ``save_freq`` batches) and, when a fit is
    interrupted (an exception, a killed process), makes the next fit with this callback
    resume where the last backup was taken: bitwise the run an uninterrupted fit would have
    made.

    The backup in ``backup_dir`` holds the weights, the optimizer's state and step count,
    the learning rate, the Dropout layers' generator states, the fit's shuffle seed (the
    resumed fit shuffles as the interrupted one did, whatever its own ``seed``) and the
    state of the other callbacks that keep one (``Callback.get_state``: EarlyStopping,
    ReduceLROnPlateau, ModelCheckpoint). It is written after every callback's
    ``on_epoch_end`` (or ``on_train_batch_end``), atomically (a model file, then the state
    file that names it), and removed when training ends unless ``delete_checkpoint=False``.
    A Dataset or iterator input resumes at the right epoch (and batch), in the order its
    own source gives the batches.

    With ``save_freq=N`` a backup is taken after every N training batches, counted across
    epochs as Keras counts them (and none at epoch ends, as in Keras). It also holds the
    position in the epoch: the batches done, the epoch's running loss and the metrics'
    running state, so that a resumed fit goes on with the next batch of that epoch and its
    History equals the uninterrupted run's (Keras restarts the epoch instead). Batch backups
    need the fit of one process (no ``strategy``).

    Parameters
    ----------
    backup_dir : str or os.PathLike
        The directory of the backup (created when needed); one per run.
    save_freq : "epoch" or int
        When to back up: after every epoch, or after every that many batches (>= 1).
    double_checkpoint : bool
        Also keep the backup before the latest; a resume falls back to it (with a warning)
        when the latest backup cannot be read.
    delete_checkpoint : bool
        Whether to remove the backup when training ends normally.
    """

    _STATE_FILE = "backup-state.npz"
    _PREVIOUS_STATE_FILE = "backup-state.previous.npz"
    _FORMAT = "densekit.backup"
    # the state file's keys per version (1: epoch backups; 2 adds the position in an epoch)
    _KEYS_V1 = frozenset(
        ("format", "version", "epoch", "seed", "model_file", "learning_rate", "callbacks", "arrays")
    )
    _STATE_KEYS: ClassVar[dict] = {1: _KEYS_V1, 2: _KEYS_V1 | {"batch", "progress"}}

    def __init__(
        self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True
    ):
        super().__init__()
        if save_freq != "epoch" and (
            isinstance(save_freq, bool) or not isinstance(save_freq, (int, np.integer))
        ):
            raise ValueError(f"save_freq: expected 'epoch' or an int >= 1, got {save_freq!r}")
        if save_freq != "epoch" and save_freq < 1:
            raise ValueError(f"save_freq: expected 'epoch' or an int >= 1, got {save_freq!r}")
        for name, value in (
            ("double_checkpoint", double_checkpoint),
            ("delete_checkpoint", delete_checkpoint),
        ):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name}: expected True or False, got {value!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq if save_freq == "epoch" else int(save_freq)
        self.double_checkpoint = bool(double_checkpoint)
        self.delete_checkpoint = bool(delete_checkpoint)
        self._seed = None
        self._model_file = None  # the model file of the latest backup
        self._batches_since_backup = 0

    def _path(self, name: str) -> str:
        return os.path.join(self.backup_dir, name)

    def restore(
        self, initial_epoch: int, seed: int, callbacks
    ) -> tuple[int, int, ResumePoint | None]:
        """Put the backup (if any) into the model, its metrics and ``callbacks``; return the
        first epoch and the shuffle seed of the fit, and where in that epoch it starts (None:
        at its start; a backup taken after a batch: the next batch) (called by fit after
        ``on_train_begin``).

        Raises
        ------
        densekit.saving.ModelFileError
            When the backup cannot be read (nor, with ``double_checkpoint``, the one before).
        """
        from . import saving

        self._seed = seed
        self._batches_since_backup = 0  # Keras counts anew in every fit
        latest, previous = self._path(self._STATE_FILE), self._path(self._PREVIOUS_STATE_FILE)
        if not os.path.exists(latest):
            return initial_epoch, seed, None
        try:
            backup = self._read(latest)
        except saving.ModelFileError as error:
            if not (self.double_checkpoint and os.path.exists(previous)):
                raise
            warnings.warn(
                f"BackupAndRestore: {error}; resuming from the backup before it",
                RuntimeWarning,
                stacklevel=2,
            )
            backup = self._read(previous)
        state, arrays, contents = backup
        saving.restore_model(self.model, contents, compile=False)
        saved = contents.header["optimizer_state"]
        if saved is not None:
            variables = {name: contents.arrays[f"optimizer.{name}"] for name in saved["variables"]}
            self.model.training_state.set_optimizer_state(saved["iterations"], variables)
        if state["learning_rate"] is not None:
            self.model.optimizer.learning_rate = state["learning_rate"]
        for index, (callback, kept) in enumerate(zip(callbacks, state["callbacks"])):
            if kept is None or kept["class"] != type(callback).__name__:
                continue
            values = dict(kept["state"])
            for key, count in kept["arrays"].items():
                values[key] = [arrays[f"callback.{index}.{key}.{j}"] for j in range(count)]
            callback.set_state(values)
        self._seed, self._model_file = state["seed"], state["model_file"]
        if state.get("batch") is None:  # after a whole epoch
            return state["epoch"] + 1, state["seed"], None
        progress = state["progress"]
        metric_states = []
        for index, kept in enumerate(progress["metrics"]):
            values = dict(kept["state"])
            values.update({key: arrays[f"metric.{index}.{key}"] for key in kept["arrays"]})
            metric_states.append(values)
        try:
            self.model.training_state.set_metric_states(metric_states)
        except (TypeError, ValueError) as error:
            raise saving.ModelFileError(
                f"{self._path(self._STATE_FILE)}: the backup's metrics are not this model's "
                f"({error})"
            ) from None
        point = ResumePoint(state["batch"] + 1, progress["loss_total"], progress["seen"])
        return state["epoch"], state["seed"], point

    def _read(self, path: str):
        """The state, its arrays and the model file of the backup whose state is ``path``."""
        from . import _archive, saving

        try:
            with _archive.Archive(path) as archive:
                state = archive.json_header("state")
                if not (
                    isinstance(state, dict)
                    and set(state) == self._STATE_KEYS.get(state.get("version"))
                    and state["format"] == self._FORMAT
                    and self._valid_position(state)
                    and isinstance(state["arrays"], list)
                    and isinstance(state["model_file"], str)
                    and isinstance(state["callbacks"], list)
                ):
                    raise saving.ModelFileError(f"{path}: not a densekit backup")
                arrays = {
                    str(name): archive.read(archive.info(str(name))) for name in state["arrays"]
                }
        except saving.ModelFileError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise saving.ModelFileError(f"{path}: unreadable backup ({error})") from None
        model_file = self._path(os.path.basename(state["model_file"]))
        return state, arrays, saving.read_model_file(model_file)

    @staticmethod
    def _valid_position(state: dict) -> bool:
        """Whether a state file's position (version 2: ``batch``, ``progress``) is well
        formed; version 1 has none."""
        if state.get("version") == 1:
            return True
        batch, progress = state["batch"], state["progress"]
        if batch is None:
            return progress is None
        return (
            _is_count(batch)
            and isinstance(progress, dict)
            and set(progress) == {"loss_total", "seen", "metrics"}
            and isinstance(progress["loss_total"], (int, float))
            and _is_count(progress["seen"])
            and isinstance(progress["metrics"], list)
            and all(
                isinstance(m, dict)
                and set(m) == {"state", "arrays"}
                and isinstance(m["state"], dict)
                and isinstance(m["arrays"], list)
                for m in progress["metrics"]
            )
        )

    def batch_done(self, epoch: int, batch: int, loss_total: float, seen: int, callbacks) -> None:
        """Count a training batch and, every ``save_freq`` of them, write the backup of the
        run after ``batch`` of ``epoch`` (called by fit after the batch's hooks, with the
        epoch's running loss sum and sample count).

        Parameters
        ----------
        epoch, batch : int
            The epoch and the batch (step) just done.
        loss_total : float
            The sum of the epoch's batch losses times their sizes, up to this batch.
        seen : int
            The epoch's samples up to this batch.
        callbacks : list of Callback
            The fit's callbacks (their states go into the backup).
        """
        self._batches_since_backup += 1
        if self._batches_since_backup >= self.save_freq:
            self._batches_since_backup = 0
            self.back_up(epoch, callbacks, batch=batch, progress=(loss_total, seen))

    def back_up(self, epoch: int, callbacks, batch=None, progress=None) -> None:
        """Write the backup of the run after ``epoch`` (called by fit after every callback's
        ``on_epoch_end``), or after ``batch`` of ``epoch`` with the epoch's running
        ``progress`` ``(loss_total, seen)`` (see ``batch_done``)."""
        from . import _archive

        os.makedirs(self.backup_dir, exist_ok=True)
        model_file = (
            f"backup-model-{epoch}.npz" if batch is None else (f"backup-model-{epoch}-{batch}.npz")
        )
        self.model.save(self._path(model_file))
        optimizer = self.model.optimizer
        kept, arrays = [], {}
        for index, callback in enumerate(callbacks):
            values = callback.get_state() if callback is not self else None
            if values is None:
                kept.append(None)
                continue
            plain, counts = {}, {}
            for key, value in values.items():
                if isinstance(value, list) and all(isinstance(a, np.ndarray) for a in value):
                    counts[key] = len(value)
                    for j, array in enumerate(value):
                        arrays[f"callback.{index}.{key}.{j}"] = array
                else:
                    plain[key] = value.item() if isinstance(value, np.generic) else value
            kept.append({"class": type(callback).__name__, "state": plain, "arrays": counts})
        position = None
        if batch is not None:
            metrics = []
            for index, values in enumerate(self.model.training_state.metric_states()):
                plain, named = {}, []
                for key, value in values.items():
                    if isinstance(value, np.ndarray):
                        arrays[f"metric.{index}.{key}"] = value
                        named.append(key)
                    else:
                        plain[key] = value.item() if isinstance(value, np.generic) else value
                metrics.append({"state": plain, "arrays": named})
            position = {
                "loss_total": float(progress[0]),
                "seen": int(progress[1]),
                "metrics": metrics,
            }
        scheduled = isinstance(optimizer.get_config()["learning_rate"], dict)
        state = {
            "format": self._FORMAT,
            "version": 2,
            "epoch": epoch,
            "batch": batch,
            "progress": position,
            "seed": self._seed,
            "model_file": model_file,
            "learning_rate": None if scheduled else optimizer.learning_rate,
            "callbacks": kept,
            "arrays": sorted(arrays),
        }
        header = np.frombuffer(json.dumps(state).encode("utf-8"), np.uint8)
        latest = self._path(self._STATE_FILE)
        keep = {model_file}
        if self.double_checkpoint and os.path.exists(latest) and self._model_file is not None:
            os.replace(latest, self._path(self._PREVIOUS_STATE_FILE))
            keep.add(self._model_file)
        _archive.write_atomically(latest, {"state": header, **arrays})
        self._model_file = model_file
        self._remove_model_files(keep)

    def _remove_model_files(self, keep=()) -> None:
        for name in os.listdir(self.backup_dir):
            if name.startswith("backup-model-") and name.endswith(".npz") and name not in keep:
                os.unlink(self._path(name))

    def on_train_end(self, logs=None):
        if not self.delete_checkpoint or not os.path.isdir(self.backup_dir):
            return
        for name in (self._STATE_FILE, self._PREVIOUS_STATE_FILE):
            if os.path.exists(self._path(name)):
                os.unlink(self._path(name))
        self._remove_model_files()
        try:
            os.rmdir(self.backup_dir)
        except OSError:
            pass  # holds other files


class TensorBoard(Callback):
    """Writes the epoch logs as TensorBoard scalars (event files, through ``tensorboardX``:
    ``pip install 'densekit[tensorboard]'``), laid out as Keras does: ``log_dir/train`` gets
    ``epoch_loss``, ``epoch_<metric>`` and ``epoch_learning_rate``, ``log_dir/validation``
    the ``val_`` values under the same tags, step = epoch. A metric with one value per class
    or threshold (``F1Score(average=None)``...) is not a scalar and is left out.

    Parameters
    ----------
    log_dir : str or os.PathLike
        The directory of the runs' event files.
    histogram_freq : int
        Every that many epochs, histograms of the weights (``<layer>/<weight>``); 0: none.
    write_graph : bool
        Accepted for Keras's sake; densekit models have no graph to write.
    write_steps_per_second : bool
        Also write ``epoch_steps_per_second``.
    update_freq : "epoch" or int
        "epoch": scalars once per epoch; an int N: also ``batch_<key>`` every N training
        batches (the running means of the epoch), step = the global batch count.
    """

    def __init__(
        self,
        log_dir="logs",
        histogram_freq=0,
        write_graph=True,
        write_steps_per_second=False,
        update_freq="epoch",
    ):
        super().__init__()
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(f"update_freq: expected 'epoch' or an int >= 1, got {update_freq!r}")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int):
            raise ValueError(f"histogram_freq: expected an int >= 0, got {histogram_freq!r}")
        if histogram_freq < 0:
            raise ValueError(f"histogram_freq: expected an int >= 0, got {histogram_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = update_freq
        self._writers: dict = {}
        self._batches = 0
        if update_freq != "epoch":  # only then: batch hooks cost time on every step
            self.on_train_batch_end = self._on_train_batch_end

    def _writer(self, name: str):
        writer = self._writers.get(name)
        if writer is None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ImportError(
                    "tensorboardX: TensorBoard writes event files with tensorboardX; install "
                    "it with pip install 'densekit[tensorboard]'"
                ) from None
            writer = self._writers[name] = SummaryWriter(os.path.join(self.log_dir, name))
        return writer

    def on_train_begin(self, logs=None):
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def _on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._batches % self.update_freq:
            return
        writer = self._writer("train")
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:  # scalars only: not a metric per class or threshold
                writer.add_scalar(f"batch_{key}", float(value), self._batches)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if "learning_rate" not in logs and self.model.optimizer is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate
        if self.write_steps_per_second:
            seconds = time.perf_counter() - self._epoch_start
            logs["steps_per_second"] = (self.params.get("steps") or 0) / max(seconds, 1e-12)
        for key, value in logs.items():
            if np.ndim(value) != 0:  # scalars only: not a metric per class or threshold
                continue
            name, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(name).add_scalar(f"epoch_{tag}", float(value), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            writer = self._writer("train")
            for layer in self.model.layers:
                for attr, _, _ in layer.weight_specs:
                    writer.add_histogram(f"{layer.name}/{attr}", getattr(layer, attr), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
