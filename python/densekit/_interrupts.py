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

try:  # signal.signal converts each handler it returns to an enum, 8 us a call; _signal's
    from _signal import getsignal as _get_handler  # are the same calls without (0.3 us)
    from _signal import signal as _set_handler
except ImportError:  # pragma: no cover - an interpreter without CPython's _signal
    _get_handler, _set_handler = signal.getsignal, signal.signal


class DeferredInterrupts:
    """A reusable context manager installing the deferring SIGINT handler for its block.

    It installs nothing (``active`` stays false) off the main thread, where no signal handler
    runs, and when SIGINT has no Python handler (ignored, or the default action). The step
    being protected, when ``active``, sets ``deferring`` around its update, then calls
    ``deliver`` if ``pending``.
    """

    def __init__(self):
        self.active = False  # installed, for the block being run
        self.deferring = False
        self.pending: tuple | None = None  # (signum, frame) of a deferred signal
        self._previous = None
        self._handler = self._handle  # one bound method, to recognise it when restoring

    def __enter__(self) -> DeferredInterrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = _get_handler(signal.SIGINT)
        if not callable(previous):  # ignored, the default action, or not set from Python
            return self
        _set_handler(signal.SIGINT, self._handler)
        self._previous, self.pending, self.active = previous, None, True
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if not self.active:
            return
        self.active = False
        current = _set_handler(signal.SIGINT, self._previous)
        if current is not self._handler:  # replaced during the block: keep the new one
            _set_handler(signal.SIGINT, current)
        if self.pending is not None and kind is None:
            self.deliver()  # noted after the last step's update: raised now
        self.pending = None

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
