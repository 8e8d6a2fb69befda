"""Signals that stop a sweep, kept even where Python drops the exception they raise.

A Python signal handler runs in whatever frame the main thread is executing. When that
frame is a garbage-collection callback (jax registers one), a ``__del__`` or a weakref
callback, the exception the handler raises is printed as "Exception ignored in ..." and
dropped; a library may also turn it into an exception of its own. Either way the sweep
would carry on as if no signal had come: Ctrl-C ignored, a scheduler's SIGTERM followed by
SIGKILL, a pre-empted submitit batch finishing instead of being requeued.

So every handler the sweep installs or wraps records what it raised in the sweep's own
:class:`Stops` (``with recorded_signals() as stops``), and the sweep calls ``stops.check()``
between batches, between chunks and before each job's files are written: a stop that was
dropped or wrapped is raised again there.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Stops:
    """What a signal's handler raised in the sweep that owns this object (None: nothing)."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None

    def check(self, cause: BaseException | None = None) -> None:
        """Raise again what a signal's handler raised, if anything (``cause``: the exception a
        library made of it). A handler that returned (it did not stop the sweep) left nothing."""
        if self.exception is not None:
            raise self.exception.with_traceback(None) from cause

    def recording(self, handler):
        def wrapped(signum, frame):
            try:
                handler(signum, frame)
            except BaseException as exc:
                self.exception = exc
                raise

        return wrapped


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def recorded_signals(stop=(signal.SIGINT, signal.SIGTERM), wrap=()):
    """Within the block, the ``stop`` signals raise KeyboardInterrupt and the handlers already
    installed for the ``wrap`` signals (submitit's USR2: checkpoint and requeue) are kept;
    each records what it raised in the :class:`Stops` the block yields. The previous
    handlers come back after. Off the main thread (where Python cannot install handlers)
    the block runs unchanged."""
    stops = Stops()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    handlers = {sig: _interrupt for sig in stop}
    for sig in wrap:
        current = signal.getsignal(sig)
        if callable(current):
            handlers[sig] = current
    previous = {sig: signal.signal(sig, stops.recording(handler)) for sig, handler in handlers.items()}
    try:
        yield stops
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C or SIGTERM, after it cleaned up and said what it kept;
    ``python -m src.train`` exits with status 130 and prints nothing more."""


@contextlib.contextmanager
def deferred(signals=(signal.SIGINT, signal.SIGTERM)):
    """Within the block (a bounded clean-up after a stop), a further Ctrl-C or SIGTERM is
    ignored rather than cutting the clean-up short; the handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
