"""Background training and inference: ``TrainingJob`` (what ``fit_async`` returns) and the
futures of ``predict_async``.

Both are ``concurrent.futures.Future`` objects (``result()``, ``exception()``,
``add_done_callback``, ``concurrent.futures.wait``) that asyncio code can also ``await``
without blocking its event loop. A TrainingJob runs ``fit`` on a thread of its own, where the
callbacks run too. ``stop()`` ends training at the next batch boundary (the job's result is
the History so far); ``cancel()`` does the same but the job ends cancelled. Either way the
weights and the optimizer state are those after a whole step. Progress is readable from any
thread (``progress``, ``history``), and ``async for epoch, logs in job`` yields each epoch's
logs as it ends. Ctrl-C (KeyboardInterrupt) while ``result()`` or ``exception()`` waits
cancels the job, as a Ctrl-C in ``fit`` stops training, unless it was started detached.

A job completes its Future through the public protocol only. It stays pending while it
trains (so that it can still end cancelled: a running Future cannot), and when training has
stopped it calls ``Future.cancel`` then ``set_running_or_notify_cancel`` (ended cancelled), or
``set_running_or_notify_cancel`` then ``set_result``/``set_exception``; ``running()`` is true
meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import os
import threading
from typing import NamedTuple

from . import callbacks as callbacks_module


class AsyncFuture(concurrent.futures.Future):
    """A concurrent.futures.Future that asyncio code can await."""

    def __await__(self):
        return asyncio.wrap_future(self).__await__()


class Progress(NamedTuple):
    """Where a job stands: ``epoch`` (0-based, None before the first), ``step`` (batches done
    in that epoch), ``steps`` per epoch (None if unknown), ``epochs`` (the last epoch + 1)."""

    epoch: int | None
    step: int
    steps: int | None
    epochs: int


_DONE = object()


class TrainingJob(AsyncFuture):
    """A fit running on its own thread; see the module docstring. Create with
    ``model.fit_async(...)``.

    Parameters
    ----------
    model : densekit.Sequential
        The model it trains.
    run : callable
        ``run(job)`` trains and returns the History, on the job's thread.
    epochs : int
        fit's ``epochs`` (for ``progress``).
    guard : densekit._guard.WeightGuard
        The model's weight guard, claimed for this job: the job's thread takes it over
        (``handover``) and releases it before the job is done.
    detached : bool
        Whether the job trains on when a wait for it is interrupted (see ``result``).
    """

    def __init__(self, model, run, epochs: int, guard, detached: bool = False):
        super().__init__()
        self.model = model
        self._detached = bool(detached)
        self._run = run
        self._epochs = epochs
        self._guard = guard
        self._stop_requested = False
        self._cancel_requested = False
        self._lock = threading.Lock()
        self._epoch_logs: list[tuple[int, dict]] = []
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._ended = False
        self._position: tuple[int | None, int] = (None, 0)
        self._steps: int | None = None
        name = f"densekit-fit-{model.name}"
        # Not a daemon: like an executor's worker, a running job keeps the interpreter alive
        # at exit until it ends (stop() it to end sooner).
        self._thread = threading.Thread(target=self._main, name=name)

    def start(self) -> None:
        """Start the job's thread (once, from ``fit_async``)."""
        self._thread.start()

    # -- control -------------------------------------------------------------------------
    def stop(self) -> bool:
        """End training at the next batch boundary; ``result()`` is then the History so far.
        Returns False if the job had already ended."""
        if self.done():
            return False
        self._stop_requested = True
        self.model.stop_training = True
        return True

    def cancel(self) -> bool:
        """Stop at the next batch boundary and end the job cancelled (``result()`` raises
        CancelledError, ``await job`` asyncio.CancelledError). Unlike a plain Future, a
        running job can be cancelled: this returns True at once and the job becomes
        ``cancelled()`` when training has stopped. Returns False if the job had ended."""
        if self.done():
            return False
        self._cancel_requested = True
        return self.stop() or self.cancelled()

    def __await__(self):
        if not self._detached:
            return super().__await__()  # cancelling the awaiting task cancels the job
        return asyncio.shield(asyncio.wrap_future(self)).__await__()

    def result(self, timeout=None):
        """The History, once training has ended (``concurrent.futures.Future.result``).

        A KeyboardInterrupt (Ctrl-C) while this waits cancels the job, as ``cancel()`` does
        (training stops at the next batch boundary, the weights and the optimizer state
        are those after the last whole step), then propagates, just as Ctrl-C stops a
        synchronous ``fit``. A job started with ``fit_async(..., detached=True)`` trains on:
        only the wait is interrupted (and cancelling an asyncio task that awaits it does
        not cancel it either).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most (None: until the job ends).

        Returns
        -------
        densekit.callbacks.History
            What ``fit`` would have returned.

        Raises
        ------
        concurrent.futures.CancelledError
            When the job was cancelled.
        TimeoutError
            When the job has not ended within ``timeout``.
        KeyboardInterrupt
            When the wait was interrupted.
        """
        try:
            return super().result(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def exception(self, timeout=None):
        """The exception that ended training, or None (``concurrent.futures.Future.exception``);
        a KeyboardInterrupt while this waits cancels the job as in ``result``.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most (None: until the job ends).

        Returns
        -------
        BaseException or None
            What ``fit`` raised.
        """
        try:
            return super().exception(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def _interrupted(self) -> None:
        """A wait for the job was interrupted: stop it at the next step boundary unless it
        is detached. It is not waited for: a second Ctrl-C must find the caller free."""
        if not self._detached:
            self.cancel()

    @property
    def detached(self) -> bool:
        """Whether the job trains on when a wait for it is interrupted (``fit_async``'s
        ``detached``)."""
        return self._detached

    def running(self) -> bool:
        """Whether the job is training (its thread started and the job is not done)."""
        return self._thread.is_alive() and not self.done()

    @property
    def stop_requested(self) -> bool:
        """Whether ``stop`` or ``cancel`` was called; the training loop checks it between
        steps."""
        return self._stop_requested

    @property
    def cancel_requested(self) -> bool:
        """Whether ``cancel`` was called."""
        return self._cancel_requested

    def set_position(self, epoch: int, step: int) -> None:
        """Record the steps done in ``epoch`` (called by the training loop)."""
        self._position = (epoch, step)

    def _main(self) -> None:
        guard = self._guard
        try:
            guard.handover()
            if self._stop_requested and self._cancel_requested:
                history = None
            else:
                history = self._run(self)
        except BaseException as error:
            guard.release()
            self._end_listeners()
            self.set_running_or_notify_cancel()
            self.set_exception(error)
            return
        guard.release()  # before the job is done: job.result() then model.fit() works
        self._end_listeners()
        if self._cancel_requested:
            super().cancel()  # pending still, so this succeeds (and runs done callbacks)
            self.set_running_or_notify_cancel()  # wakes concurrent.futures.wait
        else:
            self.set_running_or_notify_cancel()
            self.set_result(history)

    # -- progress ------------------------------------------------------------------------
    @property
    def progress(self) -> Progress:
        epoch, step = self._position
        return Progress(epoch, step, self._steps, self._epochs)

    @property
    def epoch(self) -> int | None:
        return self._position[0]

    @property
    def step(self) -> int:
        return self._position[1]

    @property
    def history(self) -> callbacks_module.History:
        """A copy of the History so far (the epochs that have ended)."""
        history = callbacks_module.History()
        with self._lock:
            history.epoch = [epoch for epoch, _ in self._epoch_logs]
            for _, logs in self._epoch_logs:
                for key, value in logs.items():
                    history.history.setdefault(key, []).append(value)
        history.model = self.model
        return history

    def __aiter__(self):
        return self._epoch_stream()

    async def _epoch_stream(self):
        """(epoch, logs) for every epoch, those already ended first, then as they end."""
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()
        with self._lock:
            past = list(self._epoch_logs)
            listening = not self._ended
            if listening:
                self._listeners.append((loop, updates))
        try:
            for item in past:
                yield item
            while listening:
                item = await updates.get()
                if item is _DONE:
                    break
                yield item
        finally:
            with self._lock:
                if (loop, updates) in self._listeners:
                    self._listeners.remove((loop, updates))

    def _publish(self, item) -> None:
        with self._lock:
            if item is not _DONE:
                self._epoch_logs.append(item)
            listeners = list(self._listeners)
        for loop, updates in listeners:
            try:
                loop.call_soon_threadsafe(updates.put_nowait, item)
            except RuntimeError:  # that event loop is closed
                pass

    def _end_listeners(self) -> None:
        with self._lock:
            self._ended = True
        self._publish(_DONE)

    def __repr__(self) -> str:
        epoch, step = self._position
        state = "cancelled" if self.cancelled() else "done" if self.done() else "running"
        return f"<TrainingJob model={self.model.name!r} {state} epoch={epoch} step={step}>"


class JobProgress(callbacks_module.Callback):
    """Feeds a job's progress from the training thread (epoch hooks only: no per-step cost)."""

    def __init__(self, job: TrainingJob):
        super().__init__()
        self.job = job

    def on_train_begin(self, logs=None):
        self.job._steps = self.params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        self.job.set_position(epoch, 0)

    def on_epoch_end(self, epoch, logs=None):
        self.job._publish((epoch, copy.copy(logs or {})))


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _inference_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            workers = max(2, min(8, os.cpu_count() or 2))
            _executor = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="densekit-predict"
            )
        return _executor


def submit(function, *args) -> AsyncFuture:
    """Run ``function(*args)`` on densekit's inference threads; an awaitable future."""
    future = AsyncFuture()

    def run():
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = function(*args)
        except BaseException as error:
            future.set_exception(error)
        else:
            future.set_result(result)

    _inference_executor().submit(run)
    return future


def _reset_after_fork() -> None:
    global _executor
    _executor = None  # its threads did not survive the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
