"""Data-parallel training across processes and machines over MPI (mpi4py).

``fit(..., strategy="mpi")`` (or an ``MPIStrategy``) trains one model on every process of an
MPI communicator. ``batch_size`` is the global batch: each global batch is cut into contiguous
slices, one per rank (default mode) or ``virtual_shards`` of them dealt to the ranks in blocks
(deterministic mode). A step is: forward of the local slice, an exchange of the slices' loss
and metric sums (every rank then holds the global figures), the backward pass with the flat
gradient buffer sent in buckets as the layers finish (a communication thread makes the MPI
calls, which release the GIL, while the kernels compute the earlier layers), and the same
optimizer step on every rank. Deterministic mode combines the virtual shards' gradients in one
fixed binary tree: local sums over a rank's block of leaves, then recursive doubling across
ranks, so the bits do not depend on the number of processes. ``import densekit`` does not
import mpi4py; this module imports it when a strategy is made.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time

import numpy as np

from . import _core, callbacks, data, layers, losses, optimizers
from ._threads import set_num_threads
from .training import aligned_zeros

__all__ = ["MPIStrategy"]

_INSTALL_HINT = (
    "densekit.distributed needs mpi4py and an MPI library: pip install 'densekit[mpi]' "
    "(mpi4py with MPICH wheels), or install mpi4py built against your cluster's MPI "
    "(Open MPI, Intel MPI, Cray MPICH)"
)
_DEFAULT_BUCKET_BYTES = 64 * 1024
# _finish's polling: yielding polls (about a millisecond) before it sleeps between polls
_YIELDING_POLLS = 2000
_POLL_SLEEP_S = 20e-6
# MPIStrategy.timings: training steps, their seconds, and the seconds the training thread
# spent in the loss/metric exchange and waiting for gradient buckets after the backward pass
_TIMING_KEYS = ("steps", "step_s", "exchange_s", "wait_s")
# what a step returns when it updated nothing: a rank asked to stop; a rank's data ran out
STOPPED, ENDED = "stopped", "ended"
_FINGERPRINT_ROWS = 256


def _mpi():
    """mpi4py's MPI module (initializing MPI on first use), or an ImportError naming the
    extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return MPI


def _finish(request) -> None:
    """Wait for a non-blocking MPI request (or a list of them) by polling, yielding the core
    between polls and, after a while, sleeping. MPI's blocking calls busy-poll a core; with
    one rank per core, a spinning communication thread would take the core from its own
    rank's kernels, while a yielding one hands it over and loses no latency when the core
    is free."""
    if isinstance(request, list):
        requests = request

        def test():
            return type(requests[0]).Testall(requests)
    else:
        test = request.Test
    polls = 0
    while not test():
        polls += 1
        if polls < _YIELDING_POLLS:
            os.sched_yield()
        else:
            time.sleep(_POLL_SLEEP_S)


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def _bounds(total: int, parts: int) -> list[int]:
    """Cut points of ``total`` rows into ``parts`` contiguous slices whose sizes differ by at
    most one (the first ``total % parts`` slices are one row longer)."""
    base, extra = divmod(total, parts)
    cuts = [0]
    for part in range(parts):
        cuts.append(cuts[-1] + base + (part < extra))
    return cuts


def _pairwise_sum(rows: np.ndarray) -> np.ndarray:
    """The sum over axis 0 in a fixed balanced binary tree (the same bits for the same rows,
    whoever computes it)."""
    if rows.shape[0] == 1:
        return rows[0].copy()
    middle = rows.shape[0] // 2
    return _pairwise_sum(rows[:middle]) + _pairwise_sum(rows[middle:])


def _first_difference(mine, theirs, path: str = ""):
    """The first place where two JSON-like values differ: ``(path, mine, theirs)`` or None."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            found = _first_difference(mine.get(key), theirs.get(key), f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(mine, list) and isinstance(theirs, list):
        for index, (a, b) in enumerate(zip(mine, theirs)):
            found = _first_difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        if len(mine) != len(theirs):
            return f"len({path.lstrip('.')})", len(mine), len(theirs)
        return None
    return None if mine == theirs else (path, mine, theirs)


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_names(value):
    """A config without its ``name`` entries (generated names may differ across ranks)."""
    if isinstance(value, dict):
        return {k: _without_names(v) for k, v in value.items() if k != "name"}
    if isinstance(value, list):
        return [_without_names(v) for v in value]
    return value


def _plain(value):
    """``value`` as JSON data (tuples as lists, anything else as its repr)."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


def _fingerprint(array) -> str:
    """Shape, dtype and a hash of up to _FINGERPRINT_ROWS evenly spaced rows: different data
    on two ranks (another split, another shuffle) shows without hashing all of it."""
    if array is None:
        return "none"
    rows = array.shape[0]
    picked = np.unique(np.linspace(0, max(rows - 1, 0), min(rows, _FINGERPRINT_ROWS)).astype(int))
    digest = hashlib.blake2b(np.ascontiguousarray(array[picked]).tobytes(), digest_size=8)
    return f"shape {array.shape}, {array.dtype}, sampled rows hash {digest.hexdigest()}"


class _CommThread:
    """One thread that runs the gradient buckets' MPI calls in order, while the training
    thread computes; mpi4py releases the GIL inside MPI calls, the kernels outside them."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._condition = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="densekit-mpi", daemon=True)
        self._thread.start()

    def submit(self, job) -> None:
        with self._condition:
            self._pending += 1
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if self._error is None:
                    job()
            except BaseException as error:
                self._error = error
            with self._condition:
                self._pending -= 1
                if self._pending == 0:
                    self._condition.notify_all()

    def wait(self) -> None:
        """Until every submitted job has run; re-raises the first job's error."""
        with self._condition:
            while self._pending:
                self._condition.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        # A job still blocked in MPI (another rank failed) is left to MPI_Abort: the thread
        # is a daemon, and joining it would hang this rank.
        if self._pending == 0:
            self._jobs.put(None)
            self._thread.join()


class _InlineComm:
    """The same interface as _CommThread, running each job at once on the calling thread
    (no overlap): for ``overlap=False`` and MPI libraries below THREAD_MULTIPLE."""

    def submit(self, job) -> None:
        job()

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


class MPIStrategy:
    """Data-parallel training over MPI: ``model.fit(x, y, strategy=MPIStrategy())``.

    Launch every process with the same script, e.g. ``mpiexec -n 4 python -m mpi4py
    train.py`` (the ``-m mpi4py`` runner turns an uncaught exception on one rank into
    ``MPI_Abort``, so that no rank waits forever). ``fit``, ``evaluate``, ``predict`` and
    ``fit_async`` accept ``strategy=``; ``strategy="mpi"`` is a shared default strategy over
    ``MPI.COMM_WORLD``. Call them on every rank with the same arguments.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None
        The processes that train together (default ``MPI.COMM_WORLD``). The strategy works on
        duplicates of it, so its messages never mix with the caller's.
    deterministic : bool
        Bitwise identical weights, losses and metrics for any process count dividing
        ``virtual_shards`` (and run to run): each global batch is cut into
        ``virtual_shards`` fixed shards whose gradients are combined in one fixed binary
        tree. Needs the same arrays ``x``, ``y`` on every rank and no Dropout. Default False:
        one slice per rank, summed by ``MPI_Allreduce`` (bitwise reproducible run to run at a
        fixed process count).
    virtual_shards : int
        The shards of each global batch in deterministic mode: a power of two that the
        number of processes divides.
    bucket_bytes : int
        The gradient bytes gathered before a bucket is sent; a bucket closes at a layer
        boundary, so each layer's gradients go out as soon as its backward call returns
        once the bucket holds at least this much.
    overlap : bool
        Run the buckets' MPI calls on a communication thread while the backward pass goes
        on (needs MPI_THREAD_MULTIPLE; below it the calls run on the training thread).
    predict_to : {"all", "root"}
        Where ``predict`` returns the whole result: on every rank, or on rank 0 (the others
        get None).
    root_only_callbacks : tuple of type
        Callback classes that run on rank 0 only (default: ModelCheckpoint, CSVLogger).
        The progress bar shows on rank 0 only; other callbacks run on every rank with the
        same logs.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of processes.
    threads : int
        The kernels' default thread count after the strategy was made.
    timings : dict
        Accumulated over training steps (for benchmarks): ``steps``, ``step_s`` (their
        seconds), ``exchange_s`` (in the loss and metric exchange, which also waits for the
        slowest rank) and ``wait_s`` (waiting for the gradient buckets after the backward
        pass: communication not hidden behind it).

    Notes
    -----
    Creating the strategy sets densekit's default thread count of each process to the
    cores of its node divided by the ranks on the node (``COMM_TYPE_SHARED``), unless
    ``set_num_threads`` was called or ``OMP_NUM_THREADS`` is set.
    """

    def __init__(
        self,
        comm=None,
        *,
        deterministic: bool = False,
        virtual_shards: int = 8,
        bucket_bytes: int = _DEFAULT_BUCKET_BYTES,
        overlap: bool = True,
        predict_to: str = "all",
        root_only_callbacks=(callbacks.ModelCheckpoint, callbacks.CSVLogger),
    ):
        MPI = _mpi()
        self._MPI = MPI
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Comm):
            raise TypeError(f"comm: expected an mpi4py.MPI.Comm or None, got {comm!r}")
        if not isinstance(deterministic, (bool, np.bool_)):
            raise TypeError(f"deterministic: expected True or False, got {deterministic!r}")
        if (
            isinstance(virtual_shards, bool)
            or not isinstance(virtual_shards, (int, np.integer))
            or not _is_power_of_two(int(virtual_shards))
        ):
            raise ValueError(
                f"virtual_shards: expected a power of two >= 1, got {virtual_shards!r}"
            )
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)):
            raise TypeError(f"bucket_bytes: expected an int, got {bucket_bytes!r}")
        if bucket_bytes < 1:
            raise ValueError(f"bucket_bytes: expected an int >= 1, got {bucket_bytes!r}")
        if predict_to not in ("all", "root"):
            raise ValueError(f"predict_to: expected 'all' or 'root', got {predict_to!r}")
        root_only = tuple(root_only_callbacks)
        if not all(isinstance(c, type) and issubclass(c, callbacks.Callback) for c in root_only):
            raise TypeError(
                "root_only_callbacks: expected densekit.callbacks.Callback classes, got "
                f"{root_only_callbacks!r}"
            )
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.deterministic = bool(deterministic)
        self.virtual_shards = int(virtual_shards)
        if self.deterministic and self.virtual_shards % self.size:
            raise ValueError(
                f"virtual_shards: deterministic mode needs a process count that divides "
                f"virtual_shards={self.virtual_shards}, got {self.size} processes"
            )
        self.bucket_bytes = int(bucket_bytes)
        self.thread_level = MPI.Query_thread()
        self.overlap = bool(overlap) and self.thread_level == MPI.THREAD_MULTIPLE
        self.predict_to = predict_to
        self.root_only_callbacks = root_only
        self.comm = comm
        self._comm = comm.Dup()  # setup checks, loss and metric exchanges
        self._gradient_comm = comm.Dup()  # gradient buckets, on the communication thread
        self.threads = _default_threads(MPI, comm)
        self.timings = dict.fromkeys(_TIMING_KEYS, 0.0)

    # -- facts ---------------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        """Whether this process is rank 0 (the one that prints and writes files)."""
        return self.rank == 0

    @property
    def slots(self) -> int:
        """The parts each global batch is cut into: virtual shards, or one per rank."""
        return self.virtual_shards if self.deterministic else self.size

    @property
    def local_slots(self) -> range:
        """This rank's parts of each global batch (a contiguous block)."""
        per_rank = self.slots // self.size
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)

    def __repr__(self) -> str:
        return (
            f"<MPIStrategy rank={self.rank} size={self.size} "
            f"deterministic={self.deterministic} virtual_shards={self.virtual_shards}>"
        )

    def require_thread_multiple(self, what: str) -> None:
        """Raise unless MPI runs at MPI_THREAD_MULTIPLE (``what`` makes MPI calls from a
        thread other than the main one).

        Parameters
        ----------
        what : str
            The caller's name in the message.

        Raises
        ------
        RuntimeError
            When MPI was initialized below MPI_THREAD_MULTIPLE.
        """
        MPI = self._MPI
        if self.thread_level != MPI.THREAD_MULTIPLE:
            names = {
                MPI.THREAD_SINGLE: "MPI_THREAD_SINGLE",
                MPI.THREAD_FUNNELED: "MPI_THREAD_FUNNELED",
                MPI.THREAD_SERIALIZED: "MPI_THREAD_SERIALIZED",
            }
            raise RuntimeError(
                f"{what}: under MPIStrategy the job's thread makes MPI calls, which needs "
                f"MPI_THREAD_MULTIPLE, but MPI runs at {names.get(self.thread_level)}; leave "
                "mpi4py.rc.thread_level at its default 'multiple' (set before importing "
                "mpi4py.MPI) and use an MPI library built with thread support"
            )

    # -- agreement checks ----------------------------------------------------------------
    def _agree(self, facts: dict, what: str) -> None:
        """Allgather ``facts`` (JSON-like) and raise on every rank, naming the first rank
        that differs from rank 0 and how, when they are not all the same."""
        everyone = self._comm.allgather(_plain(facts))
        for rank, theirs in enumerate(everyone):
            found = _first_difference(theirs, everyone[0])
            if found is not None:
                path, mine, root = found
                raise ValueError(
                    f"{what} differ across processes: rank {rank} has {path.lstrip('.')} = "
                    f"{_short(mine)}, rank 0 has {_short(root)} (every rank must build, "
                    "compile and call fit with the same model and arguments)"
                )

    def _model_facts(self, model, state) -> dict:
        return {
            "model": _without_names(model.get_config()),
            "weight shapes": [list(w.shape) for w in model.weights],
            "optimizer": _without_names(optimizers.serialize(state.optimizer)),
            "loss": _without_names(losses.serialize(state.loss)),
            "metrics": [type(m).__name__ for m in state.metrics],
        }

    def _check_data(self, arrays: dict, what: str) -> None:
        facts = {name: _fingerprint(array) for name, array in arrays.items()}
        everyone = self._comm.allgather(facts)
        for rank, theirs in enumerate(everyone):
            for name in facts:
                if theirs[name] != everyone[0][name]:
                    raise ValueError(
                        f"{name}: the {what} arrays must be the same on every rank (each rank "
                        f"takes its slice of each global batch); rank {rank} has "
                        f"{theirs[name]}, rank 0 has {everyone[0][name]} (for data that lives "
                        "per rank, pass a Dataset.shard(num_shards, index))"
                    )

    # -- fit -----------------------------------------------------------------------------
    def prepare_fit(self, model, s) -> None:
        """Check that every rank trains the same model on the same data with the same
        arguments, share rank 0's seed, weights and optimizer state, and keep the progress
        bar and the root-only callbacks on rank 0 (``_fit.setup`` calls it on every rank).

        Parameters
        ----------
        model : densekit.Sequential
            The compiled, built model.
        s : densekit._fit.FitSetup
            fit's checked arguments; its seed, verbosity and callbacks are adjusted here.

        Raises
        ------
        ValueError
            On every rank, when the ranks disagree or the batch is too small.
        """
        state = model.training_state
        if s.hogwild:
            raise ValueError("strategy: an MPIStrategy trains with workers=1 per process")
        if self.deterministic:
            if s.dataset is not None:
                raise ValueError(
                    "x: deterministic mode cuts each global batch into virtual shards and "
                    "needs the same arrays x, y on every rank, not a Dataset"
                )
            if any(isinstance(layer, layers.Dropout) and layer.rate > 0 for layer in model.layers):
                raise ValueError(
                    "deterministic: a Dropout layer's masks depend on which process draws "
                    "them; deterministic mode trains models without Dropout"
                )
        s.seed = self._comm.bcast(s.seed, root=0)
        self._agree(
            {
                **self._model_facts(model, state),
                "fit": {
                    "batch_size": s.batch_size,
                    "epochs": s.epochs,
                    "initial_epoch": s.initial_epoch,
                    "shuffle": s.shuffle,
                    "steps_per_epoch": s.steps_per_epoch,
                    "validation": s.validation is not None,
                    "validation_freq": s.validation_freq,
                    "data": "Dataset" if s.dataset is not None else "arrays",
                },
            },
            "model configurations or fit arguments",
        )
        if s.dataset is None:
            self._check_data({"x": s.x, "y": s.y, "sample_weight": s.sample_weight}, "training")
        if s.validation is not None:
            x, y, weights = s.validation
            self._check_data(
                {"validation x": x, "validation y": y, "validation sample_weight": weights},
                "validation",
            )
        if s.batch_size < self.size:
            raise ValueError(
                f"batch_size: the global batch ({s.batch_size}) is smaller than the number of "
                f"processes ({self.size}); give each rank at least one row per step"
            )
        self.broadcast_state(state)
        if not self.deterministic and self.rank > 0:
            # every rank starts from rank 0's generators: Dropout masks get their own stream
            for layer in model.layers:
                if isinstance(layer, layers.Dropout):
                    layer.rng = np.random.Generator(layer.rng.bit_generator.jumped(self.rank))
        model.distribute_strategy = self
        if not self.is_root:
            s.verbose = 0
            s.callbacks = [c for c in s.callbacks if not isinstance(c, self.root_only_callbacks)]

    def broadcast_state(self, state) -> None:
        """Copy rank 0's parameters, optimizer state and step count to every rank.

        Parameters
        ----------
        state : densekit.training.TrainingState
            The model's training state (on every rank).
        """
        parameters = state.parameters.copy()
        self._comm.Bcast(parameters, root=0)
        state.set_parameters(parameters)
        iterations, variables = state.optimizer_state()
        iterations = self._comm.bcast(int(iterations), root=0)
        copies = {}
        for name in sorted(variables):
            copies[name] = np.ascontiguousarray(variables[name]).copy()
            self._comm.Bcast(copies[name], root=0)
        state.set_optimizer_state(iterations, copies)

    def epochs(self, model, state, s, hooks, progress, job):
        """The epoch runner of a fit under this strategy (``_fit.run`` calls it).

        Parameters
        ----------
        model, state, s, hooks, progress, job
            As ``_fit``'s own epoch runners take them.

        Returns
        -------
        object
            Callable per epoch, returning ``(loss_total, samples)``; ``close()`` at the end.
        """
        if s.dataset is not None:
            return _StreamEpochs(self, model, state, s, hooks, progress, job)
        return _ArrayEpochs(self, model, state, s, hooks, progress, job)

    # -- evaluate and predict ----------------------------------------------------------------
    def evaluate(self, state, x, y, sample_weight, batch_size, hooks=None, progress=None):
        """The loss and metrics over converted arrays, each global batch of ``batch_size``
        rows shared out across the ranks; the same logs on every rank.

        Parameters
        ----------
        state : densekit.training.TrainingState
            The model's training state.
        x, y : numpy.ndarray
            Converted inputs and targets, the same on every rank.
        sample_weight : numpy.ndarray or None
            Converted weights.
        batch_size : int
            Rows per global batch.
        hooks : densekit.callbacks.CallbackList or None
            Gets the test batch hooks (with the global running logs).
        progress : densekit.callbacks.ProgbarLogger or None
            Advanced once per global batch.

        Returns
        -------
        dict
            The logs, as ``TrainingState.evaluate`` gives them.
        """
        n = x.shape[0]
        if n == 0:
            raise ValueError("x: no samples to evaluate")
        self._check_data({"x": x, "y": y, "sample_weight": sample_weight}, "evaluation")
        slots = self.slots
        weighted = sample_weight is not None
        workspace = state.workspace("evaluate", max(1, -(-min(batch_size, n) // slots)))
        tally = _Tally(self, state)
        batch_hooks = hooks is not None and hooks.batch_hooks["test"]
        for step, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            cuts = _bounds(stop - start, slots)
            if batch_hooks:
                hooks.on_test_batch_begin(step, {})
            rows = []
            for slot in self.local_slots:
                low, high = start + cuts[slot], start + cuts[slot + 1]
                if high == low:
                    rows.append(tally.empty_row())
                    continue
                plan = workspace.plan(high - low, weighted)
                plan.load(x[low:high], y[low:high], sample_weight[low:high] if weighted else None)
                for call in plan.forward:
                    call()
                loss = plan.loss()[0]
                rows.append(tally.row(plan, loss))
            gathered = tally.exchange(rows)
            tally.add(gathered, stop - start, 0.0)
            if batch_hooks:
                hooks.on_test_batch_end(step, tally.logs())
            if progress is not None:
                progress.advance(tally.logs)
        logs = tally.logs()
        penalty = state.regularization_penalty()
        if penalty:
            logs["loss"] += penalty
        return logs

    def predict(self, model, x, batch_size: int, verbose=0, callbacks_=None):
        """The model's outputs for ``x`` (the same on every rank), each rank computing a
        contiguous block of rows; returned on every rank (``predict_to="all"``) or on rank 0
        (``"root"``, the others get None).

        Parameters
        ----------
        model : densekit.Sequential
            The model (the same weights on every rank).
        x : numpy.ndarray
            Converted inputs.
        batch_size : int
            Rows per kernel call on each rank.
        verbose : int
            Progress bar on rank 0 (1) or none (0).
        callbacks_ : list or None
            Callbacks for the rank's own prediction.

        Returns
        -------
        numpy.ndarray or None
            The (n, outputs) predictions.
        """
        n = x.shape[0]
        self._check_data({"x": x}, "prediction")
        cuts = _bounds(n, self.size)
        local = x[cuts[self.rank] : cuts[self.rank + 1]]
        width = model.output_dim
        if local.shape[0]:
            mine = model.predict(
                local,
                batch_size=batch_size,
                verbose=verbose if self.is_root else 0,
                callbacks=callbacks_,
            )
        else:
            mine = np.empty((0, width), x.dtype)
        mine = np.ascontiguousarray(mine)
        counts = [(cuts[r + 1] - cuts[r]) * mine.shape[1] for r in range(self.size)]
        if self.predict_to == "all":
            outputs = np.empty((n, mine.shape[1]), mine.dtype)
            self._comm.Allgatherv(mine, [outputs, counts])
            return outputs
        outputs = np.empty((n, mine.shape[1]), mine.dtype) if self.is_root else None
        self._comm.Gatherv(mine, [outputs, counts] if self.is_root else None, root=0)
        return outputs

    def stop_requested_anywhere(self, stop: bool) -> bool:
        """Whether any rank asks to stop (every rank calls it at the same point).

        Parameters
        ----------
        stop : bool
            This rank's wish.

        Returns
        -------
        bool
            True on every rank when one rank passed True.
        """
        return bool(self._comm.allreduce(int(bool(stop)), op=self._MPI.MAX))


def _default_threads(MPI, comm) -> int:
    """Set each process's default kernel thread count to (cores of its node) / (ranks on
    its node), unless the user chose a count; returns the count in effect."""
    if _core.num_threads_is_explicit() or "OMP_NUM_THREADS" in os.environ:
        return _core.get_num_threads()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = list(range(os.cpu_count() or 1))
        # the union of the ranks' CPUs: a launcher that binds each rank to its own cores
        # leaves one share each, an unbound launch shares the whole node
        union = set().union(*node.allgather(cpus))
        if node.Get_size() > 1:
            set_num_threads(max(1, len(union) // node.Get_size()))
    finally:
        node.Free()
    return _core.get_num_threads()


class _Tally:
    """The loss and metric sums of an epoch (or an evaluation), per slot, the same on every
    rank. A slot's row: its loss, rows, each metric's total and count, and two flags (the
    rank's data ran out; the rank asks to stop)."""

    def __init__(self, strategy: MPIStrategy, state):
        self.strategy, self.state = strategy, state
        self.metrics = state.metrics
        self.mean = state.loss.kernel_reduction != "sum"
        count = len(self.metrics)
        self.width = 2 + 2 * count + 2
        self.sums = np.zeros((strategy.slots, 2 + 2 * count))
        self.ended_column, self.stop_column = self.width - 2, self.width - 1

    def empty_row(self, ended: bool = False, stop: bool = False) -> np.ndarray:
        row = np.zeros(self.width)
        row[self.ended_column], row[self.stop_column] = ended, stop
        return row

    def row(self, plan, loss: float, stop: bool = False) -> np.ndarray:
        """A slot's row, after its forward and loss calls: runs the metric updates on the
        slot alone (from zero) and reads their sums."""
        row = self.empty_row(stop=stop)
        row[0], row[1] = loss, plan.n
        state = self.state
        state.reset_metrics()
        state.update_metrics(plan)
        count = len(self.metrics)
        for i, metric in enumerate(self.metrics):
            row[2 + i], row[2 + count + i] = metric.total, metric.count
        return row

    def exchange(self, rows) -> np.ndarray:
        """Every slot's row, in slot order, on every rank."""
        mine = np.ascontiguousarray(np.stack(rows))
        gathered = np.empty((self.strategy.slots, self.width))
        _finish(self.strategy._comm.Iallgather(mine, gathered))
        return gathered

    def add(self, gathered: np.ndarray, rows: int, penalty: float) -> None:
        """Add one step's rows (``rows`` samples in the global batch, ``penalty`` the L2
        penalty once per step) to the sums, and publish them to the metrics."""
        sums = self.sums
        weights = gathered[:, 1] if self.mean else rows
        sums[:, 0] += gathered[:, 0] * weights
        if penalty:
            sums[0, 0] += penalty * rows
        sums[:, 1:] += gathered[:, 1 : self.width - 2]
        self.publish()

    def publish(self) -> None:
        """Set the metrics' running totals to the global ones (for ``state.logs``)."""
        total = _pairwise_sum(self.sums)
        count = len(self.metrics)
        for i, metric in enumerate(self.metrics):
            metric.total = float(total[2 + i])
            metric.count = int(total[2 + count + i])
        self.loss_total, self.seen = float(total[0]), int(total[1])

    def logs(self) -> dict:
        return self.state.logs(self.loss_total, self.seen)


class _StepEngine:
    """One data-parallel training step on prebuilt plans: the slots' forward passes, the
    loss and metric exchange, the backward pass with its buckets sent as the layers finish,
    the L2 penalty, the finiteness check and the optimizer step."""

    def __init__(self, strategy: MPIStrategy, state, tally: _Tally, capacity: int):
        self.strategy, self.state, self.tally = strategy, state, tally
        self.workspace = state.workspace("train", max(1, capacity))
        gradients = state.gradients
        self.gradients = gradients
        self.dtype = gradients.dtype
        self.mean = state.loss.kernel_reduction != "sum"
        segments = state.backward_segments(self.workspace.plan(1, False))
        self.buckets = self._buckets(segments, strategy.bucket_bytes // gradients.itemsize)
        per_rank = strategy.slots // strategy.size
        depth = per_rank.bit_length() - 1  # partial sums held while a rank's leaves come in
        self.free = [aligned_zeros(gradients.size, self.dtype) for _ in range(depth)]
        self.received = (
            aligned_zeros(gradients.size, self.dtype)
            if strategy.deterministic and strategy.size > 1
            else None
        )
        self.comm = _CommThread() if strategy.overlap else _InlineComm()

    @staticmethod
    def _buckets(segments, bucket_elements: int) -> dict[int, tuple[int, int]]:
        """Backward call index -> the (low, high) range of the flat gradients to send after
        it: the ranges completed since the last bucket, once they hold ``bucket_elements``,
        and everything left after the last call."""
        buckets, low, high = {}, None, None
        for index, segment in enumerate(segments):
            if segment is not None:
                low = segment[0] if low is None else min(low, segment[0])
                high = segment[1] if high is None else max(high, segment[1])
            last = index == len(segments) - 1
            if low is not None and (last or high - low >= bucket_elements):
                buckets[index] = (0 if last else low, high)
                high, low = (0 if last else low), None
        return buckets

    # -- the reduction of one range ------------------------------------------------------
    def _allreduce(self, low: int, high: int, factor: float) -> None:
        MPI = self.strategy._MPI
        view = self.gradients[low:high]
        if factor != 1.0:
            np.multiply(view, self.dtype.type(factor), out=view)
        _finish(self.strategy._gradient_comm.Iallreduce(MPI.IN_PLACE, view, op=MPI.SUM))

    def _tree_exchange(self, low: int, high: int) -> None:
        """Recursive doubling in the tree's order: after round k each rank holds the sum of
        its block of 2^(k+1) ranks, left subtree + right subtree (IEEE addition commutes, so
        both partners hold the same bits)."""
        strategy = self.strategy
        view, scratch = self.gradients[low:high], self.received[low:high]
        comm, rank, distance = strategy._gradient_comm, strategy.rank, 1
        while distance < strategy.size:
            partner = rank ^ distance
            _finish([comm.Irecv(scratch, partner, 0), comm.Isend(view, partner, 0)])
            if rank < partner:
                np.add(view, scratch, out=view)
            else:
                np.add(scratch, view, out=view)
            distance *= 2

    def _deterministic_reduce(self, low: int, high: int) -> None:
        if self.received is not None:
            self._tree_exchange(low, high)
        if self.mean and self.strategy.virtual_shards > 1:
            view = self.gradients[low:high]  # mean of the shard means: exact power of two
            np.multiply(view, self.dtype.type(1.0 / self.strategy.virtual_shards), out=view)

    # -- a step --------------------------------------------------------------------------
    def step(self, loaders, rows, weighted: bool, stop: bool = False, ended: bool = False):
        """Train on this rank's slots of one global batch.

        ``loaders`` holds, per local slot, ``(n, fill)`` (``fill(plan)`` loads the slot's
        ``n`` rows, of weighted samples when ``weighted``); ``rows`` is the global batch's
        size when known (arrays: deterministic mode needs it), else None.
        Returns ``(gathered rows, global batch size)``, or STOPPED when some rank asked to
        stop, or ENDED when some rank's data ran out (nothing is updated then).
        """
        state, tally = self.state, self.tally
        deterministic = self.strategy.deterministic
        timings, clock = self.strategy.timings, time.perf_counter
        started = clock()
        last = len(loaders) - 1
        stack: list[np.ndarray] = []  # partial sums of this rank's leaves, largest first
        sizes: list[int] = []
        slot_rows = []
        plan = None
        for index, (n, fill) in enumerate(loaders):
            if stop or ended or n == 0:
                slot_rows.append(tally.empty_row(ended, stop))
                plan = None
            else:
                if n > self.workspace.capacity:  # a longer batch from a Dataset
                    self.workspace = state.workspace("train", n)
                plan = self.workspace.plan(n, weighted)
                fill(plan)
                for call in plan.forward:
                    call()
                slot_rows.append(tally.row(plan, plan.loss()[0]))
            if index < last:  # an earlier leaf of the deterministic tree: reduce it locally
                self._leaf(plan, n, rows, stack, sizes)
        exchange_started = clock()
        gathered = tally.exchange(slot_rows)
        timings["exchange_s"] += clock() - exchange_started
        if gathered[:, tally.stop_column].any():
            return STOPPED
        if gathered[:, tally.ended_column].any():
            return ENDED
        total = int(gathered[:, 1].sum())
        self._last_leaf(plan, loaders[last][0], total, stack, sizes, deterministic)
        wait_started = clock()
        self.comm.wait()
        timings["wait_s"] += clock() - wait_started
        penalty = state.add_regularization()
        if state.check_finite:  # the global loss and gradients: the same verdict everywhere
            weights = gathered[:, 1] if self.mean else 1.0
            state.refuse_non_finite(float((gathered[:, 0] * weights).sum()) + penalty)
        state.apply_gradients()
        tally.add(gathered, total, penalty)
        timings["steps"] += 1
        timings["step_s"] += clock() - started
        return gathered, total

    def _leaf_factor(self, n: int, rows: int) -> float:
        """A leaf's weight so that the leaves' sum times 1/S is the global-batch mean."""
        if not self.mean:
            return 1.0
        return n * self.strategy.virtual_shards / rows

    def _leaf(self, plan, n: int, rows: int, stack: list, sizes: list) -> None:
        """Backward of a deterministic leaf that is not the rank's last, and its place in
        the rank's partial sums (a binary counter: equal subtrees merge, left + right)."""
        gradients = self.gradients
        if plan is None:
            gradients.fill(0)
        else:
            for call in plan.backward:
                call()
            factor = self._leaf_factor(n, rows)
            if factor != 1.0:
                np.multiply(gradients, self.dtype.type(factor), out=gradients)
        current, size = None, 1
        while sizes and sizes[-1] == size:
            left = stack.pop()
            sizes.pop()
            np.add(left, gradients if current is None else current, out=left)
            if current is not None:
                self.free.append(current)
            current, size = left, size * 2
        if current is None:
            current = self.free.pop()
            np.copyto(current, gradients)
        stack.append(current)
        sizes.append(size)

    def _last_leaf(self, plan, n, rows, stack, sizes, deterministic) -> None:
        """Backward of the rank's last slot, each bucket sent when its layers are done."""
        gradients, comm = self.gradients, self.comm
        if deterministic:
            factor = self._leaf_factor(n, rows) if n else 1.0
        else:
            factor = n / rows if self.mean else 1.0

        def finish(low: int, high: int) -> None:
            if deterministic:
                view = gradients[low:high]
                if factor != 1.0:
                    np.multiply(view, self.dtype.type(factor), out=view)
                for partial in reversed(stack):  # the newest (smallest) subtree first
                    np.add(partial[low:high], view, out=view)
                comm.submit(lambda: self._deterministic_reduce(low, high))
            else:
                comm.submit(lambda: self._allreduce(low, high, factor))

        if plan is None:
            gradients.fill(0)
            for low, high in self.buckets.values():
                finish(low, high)
        else:
            buckets = self.buckets
            for index, call in enumerate(plan.backward):
                call()
                bucket = buckets.get(index)
                if bucket is not None:
                    finish(*bucket)
        self.free.extend(stack)

    def close(self) -> None:
        self.comm.close()


class _EpochsBase:
    exhausted = False

    def __init__(self, strategy, model, state, s, hooks, progress, job):
        self.strategy, self.model, self.state, self.s = strategy, model, state, s
        self.hooks, self.progress, self.job = hooks, progress, job

    def _wants_stop(self) -> bool:
        job = self.job
        return self.model.stop_training or (job is not None and job.stop_requested)

    def _after_step(self, step: int, epoch: int) -> None:
        tally = self.engine.tally
        if self.hooks.batch_hooks["train"]:
            self.hooks.on_train_batch_end(step, tally.logs())
        if self.progress is not None:
            self.progress.advance(tally.logs)
        if self.job is not None:
            self.job.set_position(epoch, step + 1)

    def _end_epoch(self) -> tuple[float, int]:
        # a stop asked on one rank in the last batch's hooks reaches every rank before
        # fit's loop reads stop_training
        if self.strategy.stop_requested_anywhere(self.model.stop_training):
            self.model.stop_training = True
        tally = self.engine.tally
        return tally.loss_total, tally.seen

    def _start_epoch(self) -> None:
        tally = self.engine.tally
        tally.sums[...] = 0
        tally.publish()

    def close(self) -> None:
        self.engine.close()


class _ArrayEpochs(_EpochsBase):
    """Epochs over arrays given on every rank: the same shuffle everywhere, each rank
    gathering its slots' rows of each global batch."""

    def __init__(self, strategy, model, state, s, hooks, progress, job):
        super().__init__(strategy, model, state, s, hooks, progress, job)
        n = s.x.shape[0]
        capacity = -(-min(s.batch_size, n) // strategy.slots)
        self.weighted = s.sample_weight is not None
        self.engine = _StepEngine(strategy, state, _Tally(strategy, state), capacity)
        self.order = np.arange(n)
        self.identity = self.order.copy()

    def __call__(self, epoch: int) -> tuple[float, int]:
        s, strategy = self.s, self.strategy
        x, y, sample_weight = s.x, s.y, s.sample_weight
        order = self.order
        if s.shuffle:  # the same permutation as a single-process fit
            np.copyto(order, self.identity)
            np.random.default_rng((s.seed, epoch)).shuffle(order)
        self._start_epoch()
        step_engine = self.engine.step
        for step in range(s.steps):
            batch = order[step * s.batch_size : (step + 1) * s.batch_size]
            cuts = _bounds(batch.shape[0], strategy.slots)
            loaders = []
            for slot in strategy.local_slots:
                rows = batch[cuts[slot] : cuts[slot + 1]]
                loaders.append(
                    (rows.shape[0], lambda plan, rows=rows: plan.gather(x, y, sample_weight, rows))
                )
            if self.hooks.batch_hooks["train"]:
                self.hooks.on_train_batch_begin(step, {})
            if step_engine(loaders, batch.shape[0], self.weighted, self._wants_stop()) is STOPPED:
                self.model.stop_training = True
                break
            self._after_step(step, epoch)
        return self._end_epoch()


class _StreamEpochs(_EpochsBase):
    """Epochs over a Dataset or iterator on each rank (each rank's own data, e.g.
    ``Dataset.shard``): a rank's batch is its slice of the global batch. The epoch ends on
    every rank when one rank's pass ends; the others skip the rest of their pass, so that
    the passes stay aligned."""

    def __init__(self, strategy, model, state, s, hooks, progress, job):
        super().__init__(strategy, model, state, s, hooks, progress, job)
        epochs = max(s.epochs - s.initial_epoch, 0)
        if s.steps_per_epoch is None:
            self.source = data.open_source(s.dataset, epochs, None)
        else:
            self.source = data.open_source(s.dataset, None, s.steps_per_epoch * epochs)
        capacity = max(1, s.batch_size // strategy.size)
        self.engine = _StepEngine(strategy, state, _Tally(strategy, state), capacity)

    def _convert(self, batch):
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
        return x, y, weights

    def __call__(self, epoch: int) -> tuple[float, int]:
        steps = self.s.steps_per_epoch
        self._start_epoch()
        step, ended = 0, False
        while steps is None or step < steps:
            batch = self.source.next()
            ended = batch is data.END_OF_PASS or batch is data.EXHAUSTED
            self.exhausted = self.exhausted or batch is data.EXHAUSTED
            if ended:
                loaders, weighted = [(0, None)], False
            else:
                x, y, weights = self._convert(batch)
                weighted = weights is not None
                loaders = [(x.shape[0], lambda plan, b=(x, y, weights): plan.load(*b))]
                if self.hooks.batch_hooks["train"]:
                    self.hooks.on_train_batch_begin(step, {})
            result = self.engine.step(loaders, None, weighted, self._wants_stop(), ended)
            if result is STOPPED:
                self.model.stop_training = True
                break
            if result is ENDED:
                if not ended and steps is None:  # another rank's pass ended: skip the rest
                    while batch is not data.END_OF_PASS and batch is not data.EXHAUSTED:
                        batch = self.source.next()
                    self.exhausted = self.exhausted or batch is data.EXHAUSTED
                break
            self._after_step(step, epoch)
            step += 1
        self.exhausted = self.strategy.stop_requested_anywhere(self.exhausted)
        return self._end_epoch()

    def close(self) -> None:
        self.source.close()
        self.engine.close()


_shared: MPIStrategy | None = None
_shared_lock = threading.Lock()


def resolve(strategy) -> MPIStrategy:
    """``strategy`` itself, or for ``"mpi"`` the shared default ``MPIStrategy()`` over
    ``MPI.COMM_WORLD`` (made on first use).

    Parameters
    ----------
    strategy : MPIStrategy or "mpi"
        What ``fit``, ``evaluate`` or ``predict`` was given.

    Returns
    -------
    MPIStrategy
        The strategy.
    """
    global _shared
    if isinstance(strategy, MPIStrategy):
        return strategy
    if strategy != "mpi":
        raise ValueError(f"strategy: expected 'mpi' or an MPIStrategy, got {strategy!r}")
    with _shared_lock:
        if _shared is None:
            _shared = MPIStrategy()
    return _shared
