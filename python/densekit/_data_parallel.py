"""The step and the epochs of data-parallel training over MPI (``distributed.py`` holds the
strategy, its checks and its evaluate/predict).

A step: each local slot's forward pass (a slot is a rank's slice of the global batch, or a
virtual shard in deterministic mode), the start of the allgather of the slots' loss and metric
sums (``Tally``; awaited before the backward pass only for a per-rank Dataset, whose global
batch size scales the gradients), the backward pass with the flat gradient buffer sent in
buckets as the layers finish, on a communication thread (``CommThread``), then the weight
penalties and the same optimizer step on every rank. In deterministic mode a rank first sums
its leaves in tree order (a binary counter of partial sums) and the buckets go through
recursive doubling instead of MPI_Allreduce. Works on the strategy's public attributes and
its duplicated communicators only.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import numpy as np

from . import data, kernels

# finish's polling: a few tens of microseconds of plain polls, then polls that yield the core
# (about a millisecond in all), then polls with a sleep between them
_SPINNING_POLLS = 100
_YIELDING_POLLS = 2000
_POLL_SLEEP_S = 20e-6
# MPIStrategy.timings: training steps, their seconds, and the seconds the training thread
# spent in the loss/metric exchange and waiting for gradient buckets after the backward pass
TIMING_KEYS = ("steps", "step_s", "exchange_s", "wait_s")
# what a step returns when it updated nothing: a rank asked to stop; a rank's data ran out
STOPPED, ENDED = "stopped", "ended"


def finish(request) -> None:
    """Wait for a non-blocking MPI request (or a list of them) by polling: briefly spinning,
    then yielding the core between polls and, after a while, sleeping. MPI's blocking calls
    busy-poll a core; with one rank per core, a spinning communication thread would take the
    core from its own rank's kernels, while a yielding one hands it over and loses no latency
    when the core is free."""
    if isinstance(request, list):
        requests = request

        def test():
            return type(requests[0]).Testall(requests)
    else:
        test = request.Test
    polls = 0
    while not test():
        polls += 1
        if polls < _SPINNING_POLLS:
            continue
        if polls < _YIELDING_POLLS:
            os.sched_yield()
        else:
            time.sleep(_POLL_SLEEP_S)


def bounds(total: int, parts: int) -> list[int]:
    """Cut points of ``total`` rows into ``parts`` contiguous slices whose sizes differ by at
    most one (the first ``total % parts`` slices are one row longer)."""
    base, extra = divmod(total, parts)
    cuts = [0]
    for part in range(parts):
        cuts.append(cuts[-1] + base + (part < extra))
    return cuts


def pairwise_sum(rows: np.ndarray) -> np.ndarray:
    """The sum over axis 0 in a fixed balanced binary tree (the same bits for the same rows,
    whoever computes it)."""
    if rows.shape[0] == 1:
        return rows[0].copy()
    middle = rows.shape[0] // 2
    return pairwise_sum(rows[:middle]) + pairwise_sum(rows[middle:])


class CommThread:
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


class InlineComm:
    """The same interface as CommThread, running each job at once on the calling thread
    (no overlap): for ``overlap=False`` and MPI libraries below THREAD_MULTIPLE."""

    def submit(self, job) -> None:
        job()

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


class Tally:
    """The loss and metric sums of an epoch (or an evaluation), per slot, the same on every
    rank. A slot's row: its loss, rows, each metric's state (its sums, flattened), and two
    flags (the rank's data ran out; the rank asks to stop)."""

    def __init__(self, strategy, state):
        self.strategy, self.state = strategy, state
        self.metrics = state.metrics
        self.mean = state.loss.kernel_reduction != "sum"
        sizes = [metric.state.size for metric in self.metrics]
        starts = np.cumsum([2, *sizes])
        self.columns = [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]
        self.width = int(starts[-1]) + 2
        self.sums = np.zeros((strategy.slots, self.width - 2))
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
        for metric, columns in zip(self.metrics, self.columns):
            row[columns] = metric.state.ravel()
        return row

    def start_exchange(self, rows):
        """Start gathering every slot's row, in slot order, on every rank: returns the
        request and the array it fills."""
        mine = np.ascontiguousarray(np.stack(rows))
        gathered = np.empty((self.strategy.slots, self.width))
        return self.strategy.control_comm.Iallgather(mine, gathered), gathered

    def exchange(self, rows) -> np.ndarray:
        """Every slot's row, in slot order, on every rank."""
        request, gathered = self.start_exchange(rows)
        finish(request)
        return gathered

    def verdict(self, gathered: np.ndarray):
        """STOPPED or ENDED when a rank's row asks for it, else None."""
        if gathered[:, self.stop_column].any():
            return STOPPED
        if gathered[:, self.ended_column].any():
            return ENDED
        return None

    def add(self, gathered: np.ndarray, rows: int, penalty: float) -> None:
        """Add one step's rows (``rows`` samples in the global batch, ``penalty`` the weight
        penalty once per step) to the sums, and publish them to the metrics."""
        sums = self.sums
        weights = gathered[:, 1] if self.mean else rows
        sums[:, 0] += gathered[:, 0] * weights
        if penalty:
            sums[0, 0] += penalty * rows
        sums[:, 1:] += gathered[:, 1 : self.width - 2]
        self.publish()

    def publish(self) -> None:
        """Set the metrics' states to the global sums (for ``state.logs``)."""
        total = pairwise_sum(self.sums)
        for metric, columns in zip(self.metrics, self.columns):
            np.copyto(metric.state, total[columns].reshape(metric.state.shape))
        self.loss_total, self.seen = float(total[0]), int(total[1])

    def logs(self) -> dict:
        return self.state.logs(self.loss_total, self.seen)


class StepEngine:
    """One data-parallel training step on prebuilt plans: the slots' forward passes, the
    loss and metric exchange, the backward pass with its buckets sent as the layers finish,
    the weight penalties, the finiteness check and the optimizer step."""

    def __init__(self, strategy, state, tally: Tally, capacity: int):
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
        self.free = [kernels.zeros(gradients.size, self.dtype) for _ in range(depth)]
        self.received = (
            kernels.zeros(gradients.size, self.dtype)
            if strategy.deterministic and strategy.size > 1
            else None
        )
        self.comm = CommThread() if strategy.overlap else InlineComm()

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
    def allreduce_range(self, low: int, high: int, factor: float) -> None:
        """Scale ``gradients[low:high]`` by ``factor`` and sum it across the ranks."""
        MPI = self.strategy.mpi
        view = self.gradients[low:high]
        if factor != 1.0:
            np.multiply(view, self.dtype.type(factor), out=view)
        finish(self.strategy.gradient_comm.Iallreduce(MPI.IN_PLACE, view, op=MPI.SUM))

    def _tree_exchange(self, low: int, high: int) -> None:
        """Recursive doubling in the tree's order: after round k each rank holds the sum of
        its block of 2^(k+1) ranks, left subtree + right subtree (IEEE addition commutes, so
        both partners hold the same bits)."""
        strategy = self.strategy
        view, scratch = self.gradients[low:high], self.received[low:high]
        comm, rank, distance = strategy.gradient_comm, strategy.rank, 1
        while distance < strategy.size:
            partner = rank ^ distance
            finish([comm.Irecv(scratch, partner, 0), comm.Isend(view, partner, 0)])
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
        request, gathered = tally.start_exchange(slot_rows)
        if rows is None:  # a Dataset's batch: its global size scales the gradients
            finish(request)
            request = None
            timings["exchange_s"] += clock() - exchange_started
            verdict = tally.verdict(gathered)
            if verdict is not None:
                self.free.extend(stack)  # nothing more is summed in this step
                return verdict
            rows = int(gathered[:, 1].sum())
        # with arrays the exchange completes during the backward pass and its reduction
        self._last_leaf(plan, loaders[last][0], rows, stack, sizes, deterministic)
        wait_started = clock()
        self.comm.wait()
        timings["wait_s"] += clock() - wait_started
        if request is not None:
            exchange_started = clock()
            finish(request)
            timings["exchange_s"] += clock() - exchange_started
            verdict = tally.verdict(gathered)
            if verdict is not None:  # reduced on every rank, applied on none
                return verdict
        total = rows
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
                comm.submit(lambda: self.allreduce_range(low, high, factor))

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


class EpochsBase:
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


class ArrayEpochs(EpochsBase):
    """Epochs over arrays given on every rank: the same shuffle everywhere, each rank
    gathering its slots' rows of each global batch."""

    def __init__(self, strategy, model, state, s, hooks, progress, job):
        super().__init__(strategy, model, state, s, hooks, progress, job)
        n = s.x.shape[0]
        capacity = -(-min(s.batch_size, n) // strategy.slots)
        self.weighted = s.sample_weight is not None
        self.engine = StepEngine(strategy, state, Tally(strategy, state), capacity)
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
            cuts = bounds(batch.shape[0], strategy.slots)
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


class StreamEpochs(EpochsBase):
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
        self.engine = StepEngine(strategy, state, Tally(strategy, state), capacity)

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
