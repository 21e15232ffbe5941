"""Who may change a model's weights, and what other threads see while it trains.

One thread at a time trains a model (fit, train_on_batch, a fit_async job's thread, or the
hogwild coordinator): it holds the *claim*. During training every write to the parameters is
an optimizer step made under ``lock`` and followed by ``version += 1``, so between two steps
the weights are always those after a whole step. A reader on another thread (predict,
get_weights) copies the flat parameter buffer under the same lock, i.e. at a step boundary:
a snapshot, reused by every reader until the version moves. The lock is held by the trainer
for one optimizer kernel call and by a reader for one copy, never longer.

When no one trains, readers use the live weights and are counted; a new claim waits until
they are done, so a first training step never overwrites weights a prediction is reading.

Building the model (its first fit, evaluate or predict builds a model without an Input) and
making its training state happen under ``build_lock``, so that threads racing to use a new
model build it once, and every one of them uses that build.

After fork() the child has only the forking thread: every guard is reset there (no trainer,
fresh locks), so a child can predict and train whatever the parent's threads were doing.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np

_PENDING = -1  # claimed for a job whose thread has not started yet


_guards: weakref.WeakSet = weakref.WeakSet()


class WeightGuard:
    def __init__(self):
        self._reset()
        self.version = 0
        _guards.add(self)

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.build_lock = threading.RLock()  # around building and making the training state
        self._readers_done = threading.Condition(self.lock)
        self.trainer: int | None = None  # thread ident of the trainer, or _PENDING
        self._snapshot: tuple[int, np.ndarray] | None = None
        self._live_readers = 0

    # -- the trainer ---------------------------------------------------------------------
    def claim(self, what: str, model_name: str, for_job: bool = False) -> None:
        """Make the calling thread (or, with ``for_job``, a job thread that will call
        ``handover``) the model's only trainer; raise if someone already trains it."""
        with self.lock:
            if self.trainer is not None:
                raise RuntimeError(
                    f"{what}: model {model_name!r} is already training (a fit or fit_async job "
                    "is running); wait for the job (job.result()) or stop it (job.stop()) first"
                )
            self.trainer = _PENDING if for_job else threading.get_ident()
            while self._live_readers:
                self._readers_done.wait()

    def handover(self) -> None:
        """Called first thing on a job's thread: it becomes the trainer."""
        with self.lock:
            self.trainer = threading.get_ident()

    def release(self) -> None:
        with self.lock:
            self.trainer = None
            self._snapshot = None

    @property
    def training(self) -> bool:
        return self.trainer is not None

    def busy_elsewhere(self) -> bool:
        """Whether a thread other than the caller is training the model."""
        trainer = self.trainer
        return trainer is not None and trainer != threading.get_ident()

    # -- readers -------------------------------------------------------------------------
    def begin_read(self, params: np.ndarray) -> tuple[np.ndarray, bool]:
        """The parameters a reader on this thread should use, and whether they are live.
        Pair with ``end_read(live)``."""
        me = threading.get_ident()
        with self.lock:
            trainer = self.trainer
            if trainer is None:
                self._live_readers += 1
                return params, True
            if trainer == me:  # a callback on the training thread: between two steps
                return params, False
            snapshot = self._snapshot
            if snapshot is None or snapshot[0] != self.version:
                snapshot = self._snapshot = (self.version, params.copy())
            return snapshot[1], False

    def end_read(self, counted: bool) -> None:
        if not counted:
            return
        with self.lock:
            self._live_readers -= 1
            if not self._live_readers:
                self._readers_done.notify_all()


def _reset_after_fork() -> None:
    for guard in list(_guards):
        guard._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
