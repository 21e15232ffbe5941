"""Ctrl-C deferred over an optimizer step, so that an interrupted synchronous fit keeps the
weights, the optimizer state and the step count of one whole step.

Python raises KeyboardInterrupt in the main thread between two bytecodes: for instance just
after the optimizer kernel returned and before ``optimizer.iterations`` was stored. While a
training runs on the main thread, ``DeferredInterrupts`` stands in for the SIGINT handler: a
signal that comes during a step's update (``deferring`` true) is only noted, and handed to the
previous handler (Python's raises KeyboardInterrupt) once the update and its count are done.
"""

from __future__ import annotations

import signal
import threading


class DeferredInterrupts:
    """A context manager installing the deferring SIGINT handler for its block.

    It installs nothing (and ``__enter__`` returns None) off the main thread, where no signal
    handler runs, and when SIGINT has no Python handler (ignored, or the default action).
    The step being protected sets ``deferring`` around its update, then calls ``deliver`` if
    ``pending``.
    """

    def __init__(self):
        self.deferring = False
        self.pending: tuple | None = None  # (signum, frame) of a deferred signal
        self._previous = None
        self._handler = self._handle  # one bound method, to recognise it when restoring

    def __enter__(self) -> DeferredInterrupts | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return None
        self._previous = previous
        signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self._previous is None:
            return
        if signal.getsignal(signal.SIGINT) is self._handler:
            signal.signal(signal.SIGINT, self._previous)
        if self.pending is not None and kind is None:
            self.deliver()  # noted after the last step's update: raised now

    def _handle(self, signum, frame) -> None:
        if self.deferring:
            self.pending = (signum, frame)
        else:
            self._previous(signum, frame)

    def deliver(self) -> None:
        """Hand the deferred signal to the previous handler (raising KeyboardInterrupt)."""
        signum, frame = self.pending
        self.pending = None
        self._previous(signum, frame)
