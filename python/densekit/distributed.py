"""Data-parallel training across processes and machines over MPI (mpi4py).

``fit(..., strategy="mpi")`` (or an ``MPIStrategy``) trains one model on every process of an
MPI communicator. ``batch_size`` is the global batch: each global batch is cut into contiguous
slices, one per rank (default mode) or ``virtual_shards`` of them dealt to the ranks in blocks
(deterministic mode). A step is: forward of the local slice, the backward pass with the flat
gradient buffer sent in buckets as the layers finish (a communication thread makes the MPI
calls, which release the GIL, while the kernels compute the earlier layers) and, meanwhile,
an exchange of the slices' loss and metric sums (every rank then holds the global figures),
then the same optimizer step on every rank. Deterministic mode combines the virtual shards'
gradients in one fixed binary tree: local sums over a rank's block of leaves, then recursive
doubling across ranks, so the bits do not depend on the number of processes. ``import
densekit`` does not import mpi4py; this module imports it when a strategy is made.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np

from . import _core, callbacks, layers, losses, optimizers
from ._data_parallel import TIMING_KEYS, ArrayEpochs, StreamEpochs, Tally, bounds
from ._threads import set_num_threads

__all__ = ["MPIStrategy"]

_INSTALL_HINT = (
    "densekit.distributed needs mpi4py and an MPI library: pip install 'densekit[mpi]' "
    "(mpi4py with MPICH wheels), or install mpi4py built against your cluster's MPI "
    "(Open MPI, Intel MPI, Cray MPICH)"
)
_DEFAULT_BUCKET_BYTES = 64 * 1024
_FINGERPRINT_ROWS = 256  # rows hashed to compare the ranks' arrays


def _mpi():
    """mpi4py's MPI module (initializing MPI on first use), or an ImportError naming the
    extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return MPI


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


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
    mpi : module
        ``mpi4py.MPI``.
    control_comm, gradient_comm : mpi4py.MPI.Comm
        The strategy's duplicates of ``comm``: setup checks, broadcasts and the loss and
        metric exchanges on the first, gradient buckets (on the communication thread) on
        the second.
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
        self.mpi = MPI
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
        self.control_comm = comm.Dup()  # setup checks, loss and metric exchanges
        self.gradient_comm = comm.Dup()  # gradient buckets, on the communication thread
        self.threads = _default_threads(MPI, comm)
        self.timings = dict.fromkeys(TIMING_KEYS, 0.0)

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
        MPI = self.mpi
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
        everyone = self.control_comm.allgather(_plain(facts))
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
            # the metrics' configs and weighting fix the layout of the exchanged sums
            "metrics": [
                [type(m).__name__, _without_names(m.get_config()), list(m.state.shape), weighted]
                for m, weighted in zip(state.metrics, state.metric_weighted)
            ],
        }

    def _check_data(self, arrays: dict, what: str) -> None:
        facts = {name: _fingerprint(array) for name, array in arrays.items()}
        everyone = self.control_comm.allgather(facts)
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
        s.seed = self.control_comm.bcast(s.seed, root=0)
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
        self.control_comm.Bcast(parameters, root=0)
        state.set_parameters(parameters)
        iterations, variables = state.optimizer_state()
        iterations = self.control_comm.bcast(int(iterations), root=0)
        copies = {}
        for name in sorted(variables):
            copies[name] = np.ascontiguousarray(variables[name]).copy()
            self.control_comm.Bcast(copies[name], root=0)
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
            return StreamEpochs(self, model, state, s, hooks, progress, job)
        return ArrayEpochs(self, model, state, s, hooks, progress, job)

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
        tally = Tally(self, state)
        batch_hooks = hooks is not None and hooks.batch_hooks["test"]
        for step, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            cuts = bounds(stop - start, slots)
            if batch_hooks:
                hooks.on_test_batch_begin(step, {})
            rows = []
            for slot in self.local_slots:
                low, high = start + cuts[slot], start + cuts[slot + 1]
                if high == low:
                    rows.append(tally.empty_row())
                    continue
                plan = workspace.plan(high - low, weighted)
                plan.load(
                    x[low:high],
                    y[low:high],
                    sample_weight[low:high] if weighted else None,
                    in_place=True,
                )
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
        cuts = bounds(n, self.size)
        # x is flat (n, input_dim): the model's samples again (a view), flat outputs back
        local = x[cuts[self.rank] : cuts[self.rank + 1]].reshape(-1, *model.input_sample_shape)
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
        mine = np.ascontiguousarray(mine).reshape(-1, width)
        counts = [(cuts[r + 1] - cuts[r]) * mine.shape[1] for r in range(self.size)]
        shape = (n, *model.output_sample_shape)
        if self.predict_to == "all":
            outputs = np.empty((n, mine.shape[1]), mine.dtype)
            self.control_comm.Allgatherv(mine, [outputs, counts])
            return outputs.reshape(shape)
        outputs = np.empty((n, mine.shape[1]), mine.dtype) if self.is_root else None
        self.control_comm.Gatherv(mine, [outputs, counts] if self.is_root else None, root=0)
        return None if outputs is None else outputs.reshape(shape)

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
        return bool(self.control_comm.allreduce(int(bool(stop)), op=self.mpi.MAX))


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
