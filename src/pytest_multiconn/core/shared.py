"""One loop thread that many servers take turns on: :class:`SharedLoop`.

Why it exists: starting a thread per server costs little CPU but a lot of wall time in a
test run.  Linux puts the new thread on the idle CPU, and between two tests that CPU has had
time to halt; waking it (an inter-processor interrupt, in a VM a VM exit) is most of what a
function-scoped server fixture costs.  A thread that stays alive across tests pays that once.

What stays per server, exactly as with a thread of its own: the listener, the connections,
the counters, the closers (``ServerBase._close_everything``), the registry entry (the leak
check) and the errors its handlers raise (``check()``).  What the servers share is only the
thread and its selector.  The thread is renamed after the server that attached last, so a
report or a ``py-spy dump`` names the test that uses it.

A server that corrupts the loop still fails its own test, never the next one: a handler that
blocks the loop past the timeout makes that server's ``stop()`` raise
:class:`~pytest_multiconn.errors.LoopStuckError`, and a loop thread that died makes it record a
:class:`~pytest_multiconn.errors.LoopThreadError`; either way the loop is discarded and the
next server gets a fresh one.

Opt-in: ``EchoServer(loop=shared)``.  A server without ``loop=`` has its own thread, as before.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol, cast

from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Loop, LoopErrorRecord
from pytest_multiconn.core.registry import THREAD_PREFIX, keep_thread
from pytest_multiconn.errors import LoopStuckError, LoopThreadError

__all__ = ["ErrorOwner", "SharedLoop", "raise_recorded"]


class ErrorOwner(Protocol):
    """What a server on a shared loop offers, so errors of its handlers are recorded on it."""

    def record_loop_error(self, record: LoopErrorRecord) -> None: ...


def _owner_of(context: object) -> ErrorOwner | None:
    """The server a handler, callback or closer belongs to, or None (the loop's own)."""
    # A bound method (a callback, a timer, a closer) belongs to its object; a listener or a
    # connection names its server in ``.server``; a server is its own owner.
    # A TLS stream or another per-connection helper names its connection in ``.conn``.
    obj = getattr(context, "__self__", context)
    conn = getattr(obj, "conn", None)
    for candidate in (obj, getattr(obj, "server", None), getattr(conn, "server", None)):
        if candidate is not None and callable(getattr(candidate, "record_loop_error", None)):
            return cast(ErrorOwner, candidate)
    return None


class _RoutingLoop(Loop):
    """A loop whose handler errors are recorded on the server they belong to."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        #: The servers on this loop now (a new list on each change: read without a lock).
        self.attached: list[ErrorOwner] = []

    def report_error(self, exc: BaseException, context: object) -> None:
        owner = _owner_of(context)
        # An error whose owner cannot be told (a plain function as a callback) goes to every
        # server on the loop now rather than to nobody: it still fails a test, this one.
        owners = [owner] if owner is not None else list(self.attached)
        if not owners:
            super().report_error(exc, context)
            return
        try:
            ctx = repr(context)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
            ctx = object.__repr__(context)
        record = LoopErrorRecord(exc, ctx, time.monotonic())
        for each in owners:
            each.record_loop_error(record)


def raise_recorded(name: str, errors: list[LoopErrorRecord]) -> None:
    """Raise :class:`LoopThreadError` for ``errors`` (the first one, with a count), as
    ``Loop.check`` does for the errors of a loop of its own."""
    if not errors:
        return
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = "\n".join(
        f"in {e.context}:\n" + "".join(traceback.format_exception(e.exc)) for e in errors[:5]
    )
    raise LoopThreadError(
        f"{name}: {type(first.exc).__name__}: {first.exc} in {first.context}{more}\n{detail}"
    ) from first.exc


def _if(test: Callable[[], bool], action: Callable[[], None]) -> Callable[[], bool]:
    """``action()`` if ``test()``; False (declined) if not."""

    def run() -> bool:
        if not test():
            return False
        action()
        return True

    return run


class SharedLoop:
    """A loop thread kept alive for many servers, replaced when found dead or wedged.

    ``acquire()`` returns the running loop (starting one if there is none);
    ``release(server_close, timeout)`` runs a server's close in the loop thread and waits for
    it; ``close()`` stops the thread.  Thread-safe for calls from test threads.
    """

    def __init__(self, name: str = "multiconn-shared") -> None:
        if not name.startswith(THREAD_PREFIX):
            raise ValueError(f"name must start with {THREAD_PREFIX!r}, got {name!r}")
        self.base_name = name
        self._lock = threading.Lock()
        self._loop: Loop | None = None
        self._attached = 0
        self._generation = 0
        #: Loops discarded because a server found them wedged or dead (for tests and reports).
        self.discarded: list[Loop] = []

    def __repr__(self) -> str:
        return (
            f"<SharedLoop {self.base_name!r} loop={self._loop!r} attached={self._attached} "
            f"discarded={len(self.discarded)}>"
        )

    @property
    def loop(self) -> Loop | None:
        """The current loop, or None before the first ``acquire()`` / after a discard."""
        return self._loop

    def acquire(
        self, name: str, timeout: float = DEFAULT_TIMEOUT, owner: ErrorOwner | None = None
    ) -> Loop:
        """The running loop, renamed ``name`` (a fresh one if the last is dead or gone);
        ``owner`` receives the errors of handlers that cannot be attributed to one server."""
        with self._lock:
            loop = self._loop
            if loop is not None and not self._healthy(loop):
                self._discard_locked(loop)
                loop = None
            if loop is None:
                self._generation += 1
                loop = _RoutingLoop(self._idle_name())
                loop.start(timeout)
                thread = loop.thread
                if thread is not None:
                    # Alive across tests by design: not a leak of the test that started it.
                    keep_thread(thread)
                self._loop = loop
            self._attached += 1
            if owner is not None and isinstance(loop, _RoutingLoop):
                loop.attached = [*loop.attached, owner]
            self._rename(loop, name)
            return loop

    def release(
        self,
        loop: Loop,
        close: Callable[[], None],
        timeout: float,
        owner: ErrorOwner | None = None,
        *,
        direct: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``close()`` in ``loop``'s thread and wait for it; discard the loop if it is
        wedged (``LoopStuckError``) or dead (``LoopThreadError``), then raise.

        ``direct``: a test, run in the caller while the loop thread waits for I/O and is
        held there (:meth:`Loop.run_while_idle`), of whether ``close()`` may run in the
        caller too, which saves the round trip; when it says no, or the loop thread is busy,
        the loop thread runs ``close()`` as before."""
        try:
            thread = loop.thread
            if thread is not None and thread.ident == threading.get_ident():
                # From a handler of this loop: close once that handler has returned, as a
                # loop of one server schedules its stop.
                loop.call_soon(close)
                return
            if loop.is_running() and thread is not None and thread.is_alive():
                if direct is None or not loop.run_while_idle(_if(direct, close)):
                    loop.run_sync(close, timeout)
                return
            # The thread ended (a test stopped the loop, or a BaseException killed it); its
            # closers ran or never will: close here, in the caller, and say so.
            close()
            raise LoopThreadError(
                f"shared loop thread {loop.name!r} ended before the server was stopped; "
                "it is replaced for the next server"
                + (f"\n{loop.errors[0].format()}" if loop.errors else "")
            )
        except (LoopStuckError, LoopThreadError):
            self.discard(loop)
            raise
        finally:
            with self._lock:
                if owner is not None and isinstance(loop, _RoutingLoop):
                    loop.attached = [o for o in loop.attached if o is not owner]
                if self._loop is loop:
                    self._attached = max(0, self._attached - 1)
                    if not self._attached:
                        self._rename(loop, self._idle_name())

    def discard(self, loop: Loop) -> None:
        """Stop handing ``loop`` out (a wedged loop's daemon thread is left to itself)."""
        with self._lock:
            self._discard_locked(loop)

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop the current loop thread (at the end of a session)."""
        with self._lock:
            loop, self._loop = self._loop, None
            self._attached = 0
        if loop is not None:
            loop.stop(timeout)

    # -- internals ----------------------------------------------------------------------------
    def _idle_name(self) -> str:
        return f"{self.base_name}-{self._generation}"

    @staticmethod
    def _healthy(loop: Loop) -> bool:
        thread = loop.thread
        return loop.is_running() and thread is not None and thread.is_alive()

    def _discard_locked(self, loop: Loop) -> None:
        if self._loop is loop:
            self._loop = None
            self._attached = 0
            self.discarded.append(loop)
            del self.discarded[:-8]  # bounded: only the last few are worth keeping
            # Ask it to stop; a wedged thread stops when its handler returns, if ever.
            loop.call_soon_threadsafe(loop.request_stop)

    def _rename(self, loop: Loop, name: str) -> None:
        loop.name = name
        thread = loop.thread
        if thread is not None:
            thread.name = name
