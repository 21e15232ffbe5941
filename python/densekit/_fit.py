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

import contextlib
import functools
import warnings
from collections.abc import Iterator

import numpy as np

from . import _hogwild, _random, data, distributed, jobs
from . import callbacks as callbacks_module
from .training import dataset_for


def int_at_least(value, low: int, name: str) -> int:
    """``value`` as an int, checked to be an int (not a bool) >= ``low``."""
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


def setup(model, arguments: dict) -> FitSetup:
    """Check ``Sequential.fit``'s arguments (a dict by parameter name, every one present) and
    convert the data for the compiled ``model``, building it if needed."""
    a = arguments
    s = FitSetup()
    s.batch_size = 32 if a["batch_size"] is None else int_at_least(a["batch_size"], 1, "batch_size")
    s.epochs = int_at_least(a["epochs"], 0, "epochs")
    s.initial_epoch = int_at_least(a["initial_epoch"], 0, "initial_epoch")
    s.validation_freq = int_at_least(a["validation_freq"], 1, "validation_freq")
    s.verbose = callbacks_module.resolve_verbose(a["verbose"])
    s.workers = int_at_least(a["workers"], 1, "workers")
    steps_per_epoch, strategy = a["steps_per_epoch"], a["strategy"]
    s.steps_per_epoch = (
        None if steps_per_epoch is None else int_at_least(steps_per_epoch, 1, "steps_per_epoch")
    )
    s.strategy = None
    if strategy == "mpi" or isinstance(strategy, distributed.MPIStrategy):
        s.strategy = distributed.resolve(strategy)
    elif strategy not in (None, "hogwild"):
        raise ValueError(
            f"strategy: expected None, 'hogwild', 'mpi' or a densekit.distributed.MPIStrategy, "
            f"got {strategy!r}"
        )
    if s.workers > 1 and strategy != "hogwild":
        raise ValueError("workers: several workers need strategy='hogwild'")
    s.hogwild = strategy == "hogwild" and s.workers > 1
    validation_split, validation_data = a["validation_split"], a["validation_data"]
    if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
        raise ValueError(f"validation_split: expected a number in [0, 1), got {validation_split!r}")
    if validation_split and validation_data is not None:
        raise ValueError("validation_split, validation_data: give at most one of them")
    if not isinstance(a["shuffle"], (bool, np.bool_)):
        raise TypeError(f"shuffle: expected True or False, got {a['shuffle']!r}")
    s.shuffle = bool(a["shuffle"])
    s.seed = _random.draw_seed() if a["seed"] is None else int_at_least(a["seed"], 0, "seed")
    s.callbacks = list(a["callbacks"] or [])
    for callback in s.callbacks:
        if not isinstance(callback, callbacks_module.Callback):
            raise TypeError(
                f"callbacks: expected densekit.callbacks.Callback objects, got {callback!r}"
            )
    s.validation_batch_size = (
        s.batch_size
        if a["validation_batch_size"] is None
        else int_at_least(a["validation_batch_size"], 1, "validation_batch_size")
    )

    x, y, sample_weight, class_weight = a["x"], a["y"], a["sample_weight"], a["class_weight"]
    if is_batch_source(x):
        _setup_stream(model, s, x, y, sample_weight, validation_split, class_weight)
    else:
        _setup_arrays(model, s, x, y, sample_weight, validation_split, class_weight)
    s.validation = None
    if validation_data is not None:
        s.validation = _validation_data(model, validation_data)
    elif validation_split and s.dataset is None:
        s.validation = s.held_out
    if not model.training_state.has_trainable_weights:
        raise ValueError("The model has no weights to train")
    batch_backups = [
        c
        for c in s.callbacks
        if isinstance(c, callbacks_module.BackupAndRestore) and c.save_freq != "epoch"
    ]
    if batch_backups and (s.hogwild or s.strategy is not None):
        raise ValueError(
            f"callbacks: BackupAndRestore(save_freq={batch_backups[0].save_freq}) backs up "
            "between batches, which only a fit of one process (no strategy) has; use "
            "save_freq='epoch'"
        )
    if s.hogwild:
        _hogwild.check(s.callbacks)
        if model.optimizer.use_ema:
            # each worker would average the weights it saw; Keras's average is one sequence
            raise ValueError(
                "optimizer: use_ema=True needs the steps in one sequence; strategy='hogwild' "
                "runs several at once"
            )
    if s.strategy is not None:  # collective: every rank checks, agrees and starts alike
        s.strategy.prepare_fit(model, s)
    return s


def _validation_data(model, data):
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ValueError(
            "validation_data: expected a tuple (x_val, y_val) or (x_val, y_val, sample_weight)"
        )
    weights = data[2] if len(data) == 3 else None
    names = ("validation_data[0]", "validation_data[1]", "validation_data[2]")
    x, y, weights = dataset_for(model, data[0], data[1], weights, names)
    if x.shape[0] == 0:
        raise ValueError("validation_data: no samples to evaluate")
    return x, y, weights


def _setup_arrays(model, s, x, y, sample_weight, validation_split, class_weight) -> None:
    if s.steps_per_epoch is not None:
        raise ValueError("steps_per_epoch: only for a Dataset or an iterator of batches")
    x, y, sample_weight = dataset_for(model, x, y, sample_weight)
    if validation_split:
        split = int(x.shape[0] * (1.0 - validation_split))
        weights = None if sample_weight is None else sample_weight[split:]
        s.held_out = (x[split:], y[split:], weights)
        x, y = x[:split], y[:split]
        sample_weight = None if sample_weight is None else sample_weight[:split]
    if class_weight is not None:
        sample_weight = model.training_state.class_weighted(class_weight, y, sample_weight)
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
    if not dataset.is_batched:
        dataset = dataset.batch(s.batch_size)
    if not model.built:
        if dataset.sample_shape is None:
            raise ValueError(
                "x: build the model before training it from an iterator "
                "(start it with Input(shape=...) or call model.build(input_shape))"
            )
        model.ensure_built((None, *dataset.sample_shape))
    model.training_state  # noqa: B018 - made now, so that a bad compile raises here
    s.dataset = dataset
    s.steps = s.steps_per_epoch or dataset.batches_per_pass()


def run(model, s: FitSetup, job=None) -> callbacks_module.History:
    """Train as ``s`` says; ``job`` is the TrainingJob when run by fit_async."""
    state = model.training_state
    history = callbacks_module.History()
    after = (history,) if job is None else (history, jobs.JobProgress(job))
    hooks, progress = callbacks_module.configure(
        s.callbacks, model, s.verbose, epochs=s.epochs, steps=s.steps, mode="fit", after=after
    )
    model.history = history

    evaluate = state.evaluate
    if s.strategy is not None:
        evaluate = functools.partial(s.strategy.evaluate, state)
        train_epoch = s.strategy.epochs(model, state, s, hooks, progress, job)
    elif s.hogwild:
        train_epoch = _hogwild.HogwildEpochs(model, state, s, progress, job)
    elif s.dataset is not None:
        train_epoch = StreamEpochs(model, state, s, hooks, progress, job)
    else:
        train_epoch = ArrayEpochs(model, state, s, hooks, progress, job)

    model.stop_training = False
    if job is not None and job.stop_requested:
        model.stop_training = True
    logs: dict = {}
    # a synchronous fit on the main thread: Ctrl-C is raised between two whole steps
    deferring = state.deferring_interrupts() if job is None else contextlib.nullcontext()
    try:
        with deferring:
            hooks.on_train_begin()
            # a BackupAndRestore resumes an interrupted run: its next epoch and shuffle seed,
            # and with a backup taken after a batch, the position in that epoch
            s.initial_epoch, s.seed, point = hooks.resume(s.initial_epoch, s.seed)
            if point is not None and not isinstance(train_epoch, (ArrayEpochs, StreamEpochs)):
                raise ValueError(
                    "callbacks: the BackupAndRestore backup was taken inside an epoch; resume "
                    "it with a fit of one process (no strategy)"
                )
            for epoch in range(s.initial_epoch, s.epochs):
                if job is not None and job.stop_requested:
                    break
                resumed = point if epoch == s.initial_epoch else None
                if resumed is None:  # a resumed epoch goes on with its restored metrics
                    state.reset_metrics()
                hooks.on_epoch_begin(epoch)
                if resumed is None:
                    loss_total, seen = train_epoch(epoch)
                else:
                    loss_total, seen = train_epoch(epoch, resumed)
                if job is not None and job.cancel_requested:
                    break
                if seen == 0 and train_epoch.exhausted:
                    _ran_out(epoch, s)
                    break
                logs = state.logs(loss_total, seen)
                if s.validation is not None and (epoch + 1) % s.validation_freq == 0:
                    hooks.on_test_begin()
                    val_logs = evaluate(*s.validation, s.validation_batch_size, hooks)
                    hooks.on_test_end(val_logs)
                    logs.update({"val_" + key: value for key, value in val_logs.items()})
                hooks.on_epoch_end(epoch, logs)
                if model.stop_training:
                    break
                if train_epoch.exhausted:
                    _ran_out(epoch + 1, s)
                    break
            if not (job is not None and job.cancel_requested):
                state.finalize_optimizer()  # with use_ema, the weights become the average
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
        stacklevel=5,  # the warning points at the user's fit call
    )


def _resumed_step(resumed, steps) -> int:
    """The first step of a resumed epoch, checked against the epoch's ``steps`` (None: as
    many as the input gives)."""
    if steps is not None and resumed.step > steps:
        raise ValueError(
            f"callbacks: the BackupAndRestore backup was taken after batch {resumed.step - 1} "
            f"of an epoch, but this fit's epochs have {steps} batches (another batch_size?)"
        )
    return resumed.step


class EpochTally:
    """One epoch's running loss, and what follows each training step: the callbacks' batch
    hooks, the progress bar, the job's position, the stop flag."""

    def __init__(self, model, state, hooks, progress, job, epoch: int, resumed=None):
        self.model, self.state, self.hooks = model, state, hooks
        self.progress, self.job, self.epoch = progress, job, epoch
        self.batch_hooks = hooks.batch_hooks["train"]
        self.batch_backups = bool(hooks.batch_backups)
        # the epoch's running loss (a resumed epoch, see callbacks.ResumePoint: the backup's)
        if resumed is None:
            self.loss_total, self.seen = 0.0, 0
        else:
            self.loss_total, self.seen = resumed.loss_total, resumed.seen

    def logs(self) -> dict:  # the progress bar reads the running logs only when it redraws
        return self.state.logs(self.loss_total, self.seen)

    def begin(self, step: int) -> None:
        """The batch-begin hooks; the loops call it only when ``batch_hooks`` is true."""
        self.hooks.on_train_batch_begin(step, {})

    def train(self, step: int, plan) -> bool:
        """Step ``step`` on ``plan``'s buffers, then its hooks; True when training stops."""
        try:
            loss = self.state.train_step(plan)
        except FloatingPointError as error:  # compile(check_finite=True) refused the step
            raise FloatingPointError(f"epoch {self.epoch}, batch {step}: {error}") from None
        self.loss_total += loss * plan.n
        self.seen += plan.n
        if self.batch_hooks:
            self.hooks.on_train_batch_end(step, self.logs())
        if self.progress is not None:
            self.progress.advance(self.logs)
        if self.job is not None:
            self.job.set_position(self.epoch, step + 1)
        if self.batch_backups:  # after every callback's batch end: their state too
            self.hooks.after_train_batch(self.epoch, step, self.loss_total, self.seen)
        return self.model.stop_training


class ArrayEpochs:
    """Epochs over arrays: rows gathered into the plan's buffers by take_rows."""

    exhausted = False

    def __init__(self, model, state, s: FitSetup, hooks, progress, job):
        self.model, self.state, self.s = model, state, s
        self.hooks, self.progress, self.job = hooks, progress, job
        n, batch_size = s.x.shape[0], s.batch_size
        workspace = state.workspace("train", min(batch_size, n))
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

    def __call__(self, epoch: int, resumed=None) -> tuple[float, int]:
        """Train ``epoch`` (from ``resumed.step`` on, a ``callbacks.ResumePoint``); returns
        its loss sum and sample count."""
        s = self.s
        x, y, sample_weight = s.x, s.y, s.sample_weight
        batch_size, order = s.batch_size, self.order
        full_plan, last_plan = self.full_plan, self.last_plan
        if s.shuffle:
            np.copyto(order, self.identity)
            np.random.default_rng((s.seed, epoch)).shuffle(order)
        first = 0 if resumed is None else _resumed_step(resumed, s.steps)
        tally = EpochTally(
            self.model, self.state, self.hooks, self.progress, self.job, epoch, resumed
        )
        begin, train, batch_hooks = tally.begin, tally.train, tally.batch_hooks
        for step in range(first, s.steps):
            start = step * batch_size
            rows = order[start : start + batch_size]
            plan = full_plan if rows.shape[0] == full_plan.n else last_plan
            if batch_hooks:
                begin(step)
            plan.gather(x, y, sample_weight, rows)
            if train(step, plan):
                break
        return tally.loss_total, tally.seen

    def close(self) -> None:
        pass


class StreamEpochs:
    """Epochs over a Dataset or iterator: batches copied into a plan of their size. Without
    steps_per_epoch an epoch is one pass over the data; with it, steps_per_epoch batches,
    the data starting over when a pass ends."""

    def __init__(self, model, state, s: FitSetup, hooks, progress, job):
        self.model, self.state, self.s = model, state, s
        self.hooks, self.progress, self.job = hooks, progress, job
        epochs = max(s.epochs - s.initial_epoch, 0)
        if s.steps_per_epoch is None:
            self.source = data.open_source(s.dataset, epochs, None)
        else:
            self.source = data.open_source(s.dataset, None, s.steps_per_epoch * epochs)
        self.exhausted = False

    def load(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise TypeError(
                "x: each batch must be a tuple (x, y) or (x, y, sample_weight), got "
                f"{type(batch).__name__}"
            )
        x, y, weights = self.state.dataset(
            batch[0],
            batch[1],
            batch[2] if len(batch) == 3 else None,
            ("batch x", "batch y", "batch sample_weight"),
        )
        if x.shape[0] == 0:
            raise ValueError("x: a batch has no rows")
        return self.state.load_batch(x, y, weights)

    def __call__(self, epoch: int, resumed=None) -> tuple[float, int]:
        """Train ``epoch`` (from ``resumed.step`` on, a ``callbacks.ResumePoint``: the batches
        before it are read and left out); returns its loss sum and sample count."""
        steps = self.s.steps_per_epoch
        source, load = self.source, self.load
        tally = EpochTally(
            self.model, self.state, self.hooks, self.progress, self.job, epoch, resumed
        )
        step = 0
        if resumed is not None:
            step = _resumed_step(resumed, steps)
            for _ in range(step):  # the batches the interrupted run trained on already
                batch = source.next()
                if batch is data.END_OF_PASS or batch is data.EXHAUSTED:
                    raise ValueError(
                        f"x: the input has fewer than the {step} batches the interrupted "
                        f"run trained on in epoch {epoch}"
                    )
        while steps is None or step < steps:
            batch = source.next()
            if batch is data.END_OF_PASS:
                if steps is None:
                    break
                continue
            if batch is data.EXHAUSTED:
                self.exhausted = True
                break
            if tally.batch_hooks:
                tally.begin(step)
            stop = tally.train(step, load(batch))
            step += 1
            if stop:
                break
        return tally.loss_total, tally.seen

    def close(self) -> None:
        self.source.close()
