"""The training loop behind ``Sequential.fit`` and ``fit_async``.

``setup`` checks the arguments and converts the data on the calling thread (so fit_async
raises argument errors at once); ``run`` trains, on the calling thread (fit) or a job's
thread (fit_async). Three batch sources: arrays (rows gathered by the ``take_rows`` kernel
straight into the plan's buffers, a permutation per epoch), a ``data.Dataset`` or iterable
(batches copied into the plan, prepared on a prefetch thread when asked), and hogwild workers
(``_hogwild.py``). Every step is a whole step; a stop request (``stop_training``, a job's
stop/cancel) is honoured between steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from . import _random, data, kernels
from . import callbacks as callbacks_module


def _int_at_least(value, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


class FitSetup:
    """Everything ``run`` needs, checked."""

    dataset: data.Dataset | None = None
    x = y = sample_weight = None


def is_batch_source(x) -> bool:
    """A Dataset or an iterator (a generator) of batches; anything else is array-like."""
    return isinstance(x, data.Dataset) or isinstance(x, Iterator)


def setup(
    model,
    x=None,
    y=None,
    batch_size=None,
    epochs=1,
    verbose="auto",
    callbacks=None,
    validation_split=0.0,
    validation_data=None,
    shuffle=True,
    sample_weight=None,
    initial_epoch=0,
    seed=None,
    validation_batch_size=None,
    validation_freq=1,
    class_weight=None,
    steps_per_epoch=None,
    workers=1,
    strategy=None,
) -> FitSetup:
    model._require_compiled("fit")
    model._refuse_while_training("fit")
    s = FitSetup()
    s.batch_size = 32 if batch_size is None else _int_at_least(batch_size, 1, "batch_size")
    s.epochs = _int_at_least(epochs, 0, "epochs")
    s.initial_epoch = _int_at_least(initial_epoch, 0, "initial_epoch")
    s.validation_freq = _int_at_least(validation_freq, 1, "validation_freq")
    s.verbose = callbacks_module.resolve_verbose(verbose)
    s.workers = _int_at_least(workers, 1, "workers")
    s.steps_per_epoch = (
        None if steps_per_epoch is None else _int_at_least(steps_per_epoch, 1, "steps_per_epoch")
    )
    if strategy not in (None, "hogwild"):
        raise ValueError(f"strategy: expected None or 'hogwild', got {strategy!r}")
    if s.workers > 1 and strategy != "hogwild":
        raise ValueError("workers: several workers need strategy='hogwild'")
    s.hogwild = strategy == "hogwild" and s.workers > 1
    if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split: expected a number in [0, 1), got {validation_split!r}")
    if validation_split and validation_data is not None:
        raise ValueError("validation_split, validation_data: give at most one of them")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
    s.shuffle = bool(shuffle)
    s.seed = _random.draw_seed() if seed is None else _int_at_least(seed, 0, "seed")
    s.callbacks = list(callbacks or [])
    for callback in s.callbacks:
        if not isinstance(callback, callbacks_module.Callback):
            raise TypeError(
                f"callbacks: expected densekit.callbacks.Callback objects, got {callback!r}"
            )
    s.validation_batch_size = (
        s.batch_size
        if validation_batch_size is None
        else _int_at_least(validation_batch_size, 1, "validation_batch_size")
    )

    if is_batch_source(x):
        _setup_stream(model, s, x, y, sample_weight, validation_split, class_weight)
    else:
        _setup_arrays(model, s, x, y, sample_weight, validation_split, class_weight)
    s.validation = None
    if validation_data is not None:
        s.validation = model._validation_data(validation_data)
    elif validation_split and s.dataset is None:
        s.validation = s.held_out
    if model._first_weighted_op("train") is None:
        raise ValueError("The model has no weights to train")
    if s.hogwild:
        from . import _hogwild

        _hogwild.check(model, s)
    return s


def _setup_arrays(model, s, x, y, sample_weight, validation_split, class_weight) -> None:
    if s.steps_per_epoch is not None:
        raise ValueError("steps_per_epoch: only for a Dataset or an iterator of batches")
    x, y, sample_weight = model._dataset(x, y, sample_weight)
    if validation_split:
        split = int(x.shape[0] * (1.0 - validation_split))
        weights = None if sample_weight is None else sample_weight[split:]
        s.held_out = (x[split:], y[split:], weights)
        x, y = x[:split], y[:split]
        sample_weight = None if sample_weight is None else sample_weight[:split]
    if class_weight is not None:
        sample_weight = model._class_weighted(class_weight, y, sample_weight)
    if x.shape[0] == 0:
        raise ValueError("x: no samples to train on")
    s.x, s.y, s.sample_weight = x, y, sample_weight
    s.steps = -(-x.shape[0] // s.batch_size)


def _setup_stream(model, s, x, y, sample_weight, validation_split, class_weight) -> None:
    for value, name in (
        (y, "y"),
        (sample_weight, "sample_weight"),
        (class_weight, "class_weight"),
    ):
        if value is not None:
            raise ValueError(f"{name}: with a Dataset or iterator x, the batches carry it")
    if validation_split:
        raise ValueError("validation_split: not with a Dataset or iterator; use validation_data")
    if s.hogwild:
        raise ValueError("strategy: 'hogwild' trains on arrays x and y")
    dataset = x if isinstance(x, data.Dataset) else data.Dataset.from_batches(x).prefetch(2)
    if dataset._arrays is not None and dataset._batch_size is None:
        dataset = dataset.batch(s.batch_size)
    if not model.built:
        if dataset.feature_count is None:
            raise ValueError(
                "x: build the model before training it from an iterator "
                "(start it with Input(shape=...) or call model.build(input_shape))"
            )
        model.build((None, dataset.feature_count))
    model._prepare()
    s.dataset = dataset
    s.steps = s.steps_per_epoch or dataset.batches_per_pass()


def run(model, s: FitSetup, job=None) -> callbacks_module.History:
    """Train as ``s`` says; ``job`` is the TrainingJob when run by fit_async."""
    history = callbacks_module.History()
    callback_objects = list(s.callbacks)
    progress = None
    if s.verbose:
        progress = callbacks_module.ProgbarLogger(s.verbose)
        callback_objects.append(progress)
    callback_objects.append(history)
    if job is not None:
        from .jobs import JobProgress

        callback_objects.append(JobProgress(job))
    params = {"verbose": s.verbose, "epochs": s.epochs, "steps": s.steps, "mode": "fit"}
    hooks = callbacks_module.CallbackList(callback_objects, model, params)
    model.history = history

    if s.hogwild:
        from ._hogwild import HogwildEpochs

        train_epoch = HogwildEpochs(model, s, progress, job)
    elif s.dataset is not None:
        train_epoch = StreamEpochs(model, s, hooks, progress, job)
    else:
        train_epoch = ArrayEpochs(model, s, hooks, progress, job)

    model.stop_training = False
    if job is not None and job._stop_requested:
        model.stop_training = True
    logs: dict = {}
    try:
        hooks.on_train_begin()
        for epoch in range(s.initial_epoch, s.epochs):
            if job is not None and job._stop_requested:
                break
            model._reset_metrics()
            hooks.on_epoch_begin(epoch)
            loss_total, seen = train_epoch(epoch)
            if job is not None and job._cancel_requested:
                break
            if seen == 0 and train_epoch.exhausted:
                _ran_out(epoch, s)
                break
            logs = model._logs(loss_total, seen)
            if s.validation is not None and (epoch + 1) % s.validation_freq == 0:
                hooks.on_test_begin()
                val_logs = model._evaluate_arrays(
                    *s.validation, s.validation_batch_size, hooks, None
                )
                hooks.on_test_end(val_logs)
                logs.update({"val_" + key: value for key, value in val_logs.items()})
            hooks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
            if train_epoch.exhausted:
                _ran_out(epoch + 1, s)
                break
        if not (job is not None and job._cancel_requested):
            hooks.on_train_end(logs)
    finally:
        train_epoch.close()
    return history


def _ran_out(epoch: int, s: FitSetup) -> None:
    if epoch == s.initial_epoch:
        raise ValueError("x: the dataset yielded no batches")
    warnings.warn(
        f"x: the input ran out of data after {epoch - s.initial_epoch} epoch(s); training "
        "stops (give steps_per_epoch with a one-shot iterator, or pass a re-iterable Dataset)",
        stacklevel=4,
    )


class EpochTally:
    """One epoch's running loss, and what follows each training step: the callbacks' batch
    hooks, the progress bar, the job's position, the stop flag."""

    def __init__(self, model, hooks, progress, job, epoch: int):
        self.model, self.hooks, self.progress, self.job = model, hooks, progress, job
        self.epoch = epoch
        self.batch_hooks = hooks.batch_hooks["train"]
        self.loss_total, self.seen = 0.0, 0

    def logs(self) -> dict:  # the progress bar reads the running logs only when it redraws
        return self.model._logs(self.loss_total, self.seen)

    def begin(self, step: int) -> None:
        if self.batch_hooks:
            self.hooks.on_train_batch_begin(step, {})

    def train(self, step: int, plan) -> bool:
        """Step ``step`` on ``plan``'s buffers, then its hooks; True when training stops."""
        loss = self.model._train_step(plan)
        self.loss_total += loss * plan.n
        self.seen += plan.n
        if self.batch_hooks:
            self.hooks.on_train_batch_end(step, self.logs())
        if self.progress is not None:
            self.progress.advance(self.logs)
        if self.job is not None:
            self.job._position = (self.epoch, step + 1)
        return self.model.stop_training


class ArrayEpochs:
    """Epochs over arrays: rows gathered into the plan's buffers by take_rows."""

    exhausted = False

    def __init__(self, model, s: FitSetup, hooks, progress, job):
        self.model, self.s, self.hooks, self.progress, self.job = model, s, hooks, progress, job
        n, batch_size = s.x.shape[0], s.batch_size
        workspace = model._workspace("train", min(batch_size, n))
        self.weighted = s.sample_weight is not None
        self.full_plan = workspace.plan(min(batch_size, n), self.weighted)
        last_rows = n % batch_size
        self.last_plan = (
            workspace.plan(last_rows, self.weighted)
            if last_rows and n > batch_size
            else self.full_plan
        )
        self.order = np.arange(n)
        self.identity = self.order.copy()

    def __call__(self, epoch: int) -> tuple[float, int]:
        s = self.s
        x, y, sample_weight, weighted = s.x, s.y, s.sample_weight, self.weighted
        batch_size, order = s.batch_size, self.order
        full_plan, last_plan = self.full_plan, self.last_plan
        take_rows = kernels.take_rows
        if s.shuffle:
            np.copyto(order, self.identity)
            np.random.default_rng((s.seed, epoch)).shuffle(order)
        tally = EpochTally(self.model, self.hooks, self.progress, self.job, epoch)
        begin, train = tally.begin, tally.train
        for step in range(s.steps):
            start = step * batch_size
            rows = order[start : start + batch_size]
            plan = full_plan if rows.shape[0] == full_plan.n else last_plan
            begin(step)
            take_rows(x, rows, out=plan.x)
            take_rows(y, rows, out=plan.y)
            if weighted:
                take_rows(sample_weight, rows, out=plan.sample_weight)
            if train(step, plan):
                break
        return tally.loss_total, tally.seen

    def close(self) -> None:
        pass


class StreamEpochs:
    """Epochs over a Dataset or iterator: batches copied into a plan of their size. Without
    steps_per_epoch an epoch is one pass over the data; with it, steps_per_epoch batches,
    the data starting over when a pass ends."""

    def __init__(self, model, s: FitSetup, hooks, progress, job):
        self.model, self.s, self.hooks, self.progress, self.job = model, s, hooks, progress, job
        epochs = max(s.epochs - s.initial_epoch, 0)
        if s.steps_per_epoch is None:
            self.source = data.open_source(s.dataset, epochs, None)
        else:
            self.source = data.open_source(s.dataset, None, s.steps_per_epoch * epochs)
        self.exhausted = False

    def load(self, batch):
        model = self.model
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError(
                "x: each batch must be a tuple (x, y) or (x, y, sample_weight), got "
                f"{type(batch).__name__}"
            )
        x, y, weights = model._dataset(
            batch[0],
            batch[1],
            batch[2] if len(batch) == 3 else None,
            ("batch x", "batch y", "batch sample_weight"),
        )
        n = x.shape[0]
        if n == 0:
            raise ValueError("x: a batch has no rows")
        plan = model._workspace("train", n).plan(n, weights is not None)
        np.copyto(plan.x, x)
        np.copyto(plan.y, y)
        if weights is not None:
            np.copyto(plan.sample_weight, weights)
        return plan

    def __call__(self, epoch: int) -> tuple[float, int]:
        steps = self.s.steps_per_epoch
        source, load = self.source, self.load
        tally = EpochTally(self.model, self.hooks, self.progress, self.job, epoch)
        step = 0
        while steps is None or step < steps:
            batch = source.next()
            if batch is data.END_OF_PASS:
                if steps is None:
                    break
                continue
            if batch is data.EXHAUSTED:
                self.exhausted = True
                break
            tally.begin(step)
            stop = tally.train(step, load(batch))
            step += 1
            if stop:
                break
        return tally.loss_total, tally.seen

    def close(self) -> None:
        self.source.close()
