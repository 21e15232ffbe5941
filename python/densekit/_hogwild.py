"""Hogwild! (Recht, Re, Wright and Niu, 2011): ``fit(..., workers=k, strategy="hogwild")``.

Each epoch the shuffled rows are dealt into k shards; k threads each train on their own shard
with their own activations, gradients and optimizer state (as PyTorch's hogwild example gives
each process its own optimizer), and apply their updates to the model's one parameter buffer
without any lock: an update may land between another worker's forward and backward, and two
updates of one weight may race. For sparse or small, noisy gradients that costs little
accuracy, and the workers never wait for each other. The kernels release the GIL, so the
workers really run at once; their kernels share the cores through the thread budget.

The learning-rate schedule follows the global step count (all workers together). When the
fit ends, the model's optimizer holds the total step count and the mean of the workers'
states. Epoch-level callbacks run on the training thread between epochs (the workers are
idle then); batch-level callbacks are refused. Weights read from another thread during an
epoch (predict, get_weights) are a copy taken while the workers run: every value is one
some worker wrote, but not all from one step.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np

from .callbacks import overrides_batch_hooks


def check(callbacks) -> None:
    """Refuse callbacks with batch hooks: the workers step at once, between no two batches."""
    hooks = [c for c in callbacks if overrides_batch_hooks(c, "train")]
    if hooks:
        raise ValueError(
            f"callbacks: {type(hooks[0]).__name__} has batch hooks, which strategy='hogwild' "
            "does not run (its workers step at once); use epoch hooks"
        )


class _Worker:
    """One hogwild thread: a replica of the training state (its own gradients, optimizer
    state, metrics and workspace) stepping on the model's parameters."""

    def __init__(self, model, state, s, global_steps):
        self.model, self.s, self.global_steps = model, s, global_steps
        self.state = state.replica()
        self.workspace = self.state.workspace("train", min(s.batch_size, s.x.shape[0]))
        self.error: BaseException | None = None
        self.finished = threading.Event()  # set when run returns
        self.loss_total, self.seen, self.steps_done = 0.0, 0, 0

    def run(self, shard: np.ndarray, stop: threading.Event) -> None:
        try:
            self._run(shard, stop)
        except BaseException as error:
            self.error = error
            stop.set()
        finally:
            self.finished.set()

    def _run(self, shard, stop) -> None:
        model, s, state = self.model, self.s, self.state
        x, y, sample_weight = s.x, s.y, s.sample_weight
        weighted = sample_weight is not None
        plan_of, global_steps = self.workspace.plan, self.global_steps
        compute_gradients, apply_gradients = state.compute_gradients, state.apply_gradients
        check_finite = state.check_finite
        state.reset_metrics()
        self.loss_total, self.seen, self.steps_done = 0.0, 0, 0
        for start in range(0, shard.shape[0], s.batch_size):
            if stop.is_set():  # set before this thread got here (Ctrl-C in fit)
                break
            rows = shard[start : start + s.batch_size]
            plan = plan_of(rows.shape[0], weighted)
            plan.gather(x, y, sample_weight, rows)
            loss = compute_gradients(plan)
            if check_finite:
                state.refuse_non_finite(loss)
            apply_gradients(schedule_step=next(global_steps))  # no lock: the point of hogwild
            state.update_metrics(plan)
            self.loss_total += loss * plan.n
            self.seen += plan.n
            self.steps_done += 1
            if stop.is_set() or model.stop_training:
                break


class HogwildEpochs:
    """The epochs of a hogwild fit, run from the training thread."""

    exhausted = False

    def __init__(self, model, state, s, progress, job):
        self.model, self.state, self.s, self.progress, self.job = model, state, s, progress, job
        self.start_step = state.optimizer.iterations
        self.global_steps = itertools.count(self.start_step)
        self.workers = [_Worker(model, state, s, self.global_steps) for _ in range(s.workers)]
        self.order = np.arange(s.x.shape[0])

    def __call__(self, epoch: int) -> tuple[float, int]:
        s = self.s
        order = self.order
        if s.shuffle:
            order = np.random.default_rng((s.seed, epoch)).permutation(order.shape[0])
        shards = np.array_split(order, len(self.workers))
        stop = threading.Event()
        for worker in self.workers:
            worker.finished.clear()
        threads = [
            threading.Thread(
                target=worker.run, args=(shard, stop), name=f"densekit-hogwild-{i}", daemon=True
            )
            for i, (worker, shard) in enumerate(zip(self.workers, shards))
        ]
        shown = 0
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.1)
                    shown = self._show_progress(epoch, shown)
        except BaseException:  # Ctrl-C: no worker steps once fit has raised
            stop.set()
            # Not thread.join: a join that a KeyboardInterrupt cut short marks a running
            # thread as stopped (CPython's bpo-45274 fix), and a new join returns at once.
            for worker, thread in zip(self.workers, threads):
                if thread.ident is not None:  # running: it ends after its step
                    worker.finished.wait()  # (one not running yet sees stop before its first)
            raise
        self._show_progress(epoch, shown)
        for worker in self.workers:
            if worker.error is not None:
                raise worker.error
        metrics = self.state.metrics
        for metric in metrics:
            metric.reset_state()
        for worker in self.workers:
            for metric, own in zip(metrics, worker.state.metrics):
                metric.state += own.state  # the workers' sums add up
        return (
            sum(worker.loss_total for worker in self.workers),
            sum(worker.seen for worker in self.workers),
        )

    def _show_progress(self, epoch: int, shown: int) -> int:
        done = sum(worker.steps_done for worker in self.workers)
        if self.progress is not None and done > shown:
            self.progress.advance(dict, steps=done - shown)
        if self.job is not None:
            self.job.set_position(epoch, done)
        return done

    def close(self) -> None:
        """Hand the step count and the mean of the workers' states to the model's optimizer."""
        optimizer = self.state.optimizer
        steps = sum(w.state.optimizer.iterations - self.start_step for w in self.workers)
        if steps == 0:
            return
        optimizer.iterations = self.start_step + steps
        for name, state in optimizer.variables.items():
            state[...] = 0
            for worker in self.workers:
                state += worker.state.optimizer.variables[name]
            state /= len(self.workers)
