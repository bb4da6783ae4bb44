"""How a long-running command (``server``, ``proxy``, ``toxiproxy-server``) waits to be stopped.

Each of them serves from the loop thread while the main thread waits here for Ctrl-C
(``KeyboardInterrupt`` reaches the caller), SIGTERM, or the end of ``--duration``.  Two
details of POSIX and CPython make the obvious ``Event.wait()`` wrong:

* A background job of a non-interactive shell (``multiconn proxy ... &`` in a CI script)
  starts with SIGINT *ignored*, and Python then installs no handler of its own: the SIGINT
  that users, ``ServerProcess`` and ``kill -INT`` send to stop the command would do nothing.
  :func:`stop_on_signals` installs ``default_int_handler`` for SIGINT and a handler that sets
  the stop event for SIGTERM, and restores both afterwards.
* A signal that arrives while the main thread is on its way into a sleep (past its last
  check for pending signals, say while it hands the GIL to the loop thread) only sets
  CPython's "signal tripped" flag; the main thread then sleeps on and nothing runs the
  handler until something else wakes it.  Under load, Ctrl-C was lost like that about once in
  60 stops.  :func:`wait_for_stop` closes the window with ``signal.set_wakeup_fd``: the C
  handler itself writes a byte to a socket, so the ``recv`` below returns whether the signal
  came just before or during the sleep, and the Python handler runs as soon as it does.

Off the main thread (a command run in-process by a test) signals cannot be handled, and both
helpers fall back to the plain wait.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["request_stop", "stop_on_signals", "wait_for_stop"]

# The wake-up socket of each wait_for_stop() running now, by id() of its event, so that
# request_stop() from another thread wakes a main thread asleep in recv().
_wakers: dict[int, socket.socket] = {}


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside: SIGTERM sets ``stop`` and SIGINT raises ``KeyboardInterrupt``, even when
    the process started with SIGINT ignored.  Restores the previous handlers on exit."""
    if not _on_main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous_term = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def request_stop(stop: threading.Event) -> None:
    """Set ``stop`` from any thread and wake the :func:`wait_for_stop` waiting on it."""
    stop.set()
    waker = _wakers.get(id(stop))
    if waker is not None:
        with contextlib.suppress(OSError):  # full (already woken) or closed (already done)
            waker.send(b"\0")


def wait_for_stop(stop: threading.Event, duration: float | None = None) -> None:
    """Block until ``stop`` is set or ``duration`` seconds pass (None: no bound); a SIGINT
    raises ``KeyboardInterrupt`` out of here (inside :func:`stop_on_signals`)."""
    if not _on_main_thread():
        stop.wait(duration)
        return
    deadline = None if duration is None else time.monotonic() + duration
    rsock, wsock = socket.socketpair()
    with rsock, wsock:
        wsock.setblocking(False)
        previous = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        _wakers[id(stop)] = wsock
        try:
            while not stop.is_set():
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    rsock.settimeout(remaining)
                try:
                    rsock.recv(64)
                except TimeoutError:
                    return
        finally:
            _wakers.pop(id(stop), None)
            signal.set_wakeup_fd(previous)
