"""The life cycle our background services share: start once, stop, ``with``, bounded waits.

:class:`StartStop` is the context-manager protocol of everything that is started and
stopped (a server, a proxy, a child process): ``with`` starts it unless it already runs,
stops it, and on a clean exit re-raises what ``check()`` finds.

:class:`LoopService` is what a server on a selector loop thread adds to it, whatever it
serves (:class:`~pytest_multiconn.core.server.ServerBase` streams, ``udp/`` datagrams): the
loop it owns (or runs on), its name and bound address, leak tracking while it runs, and the
condition its loop thread notifies so that a test thread waits for a change without polling.
The per-event path is :meth:`LoopService.notify` alone, one attribute read when nobody waits.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Loop
from pytest_multiconn.core.registry import thread_tag, track_server, untrack_server
from pytest_multiconn.core.wait import wait_loop
from pytest_multiconn.errors import WaitImpossible, WaitTimeout

AddressT = TypeVar("AddressT")
T = TypeVar("T")


class StartStop:
    """``with`` starts (unless started), stops, and re-raises ``check()``'s error on success."""

    def needs_start(self) -> bool:
        raise NotImplementedError

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def check(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self.needs_start():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.check()


class LoopService(StartStop, Generic[AddressT]):
    """A service served by a selector loop thread: its state from ``start()`` to ``stop()``.

    Subclasses bind in ``start()``, set ``_address`` and ``_loop``, name the loop with
    :meth:`_thread_name`, start it with :meth:`_start_loop`, and call :meth:`notify` on
    every change a waiter may be waiting for.
    """

    kind = "server"

    #: The bound in seconds on a wait called without ``timeout=``.  A class attribute, so a
    #: subclass that sets its own before ``__init__`` keeps it.
    timeout: float = DEFAULT_TIMEOUT

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._loop: Loop | None = None  # made by start(): it owns a socketpair
        # On a loop this service does not own (a shared one): the name it runs under.
        self._run_name: str | None = None
        self._address: AddressT | None = None
        self._cond = threading.Condition()
        self._waiters = 0
        self._changes = 0  # bumped by notify while someone waits
        self._started = False
        self._stopped = False

    # -- naming and addresses ----------------------------------------------------------------
    @property
    def loop(self) -> Loop:
        """The loop this server runs on (it exists once ``start()`` was called)."""
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() or use `with`")
        return self._loop

    @property
    def name(self) -> str:
        if self._run_name is not None:
            return self._run_name
        if self._loop is not None:
            return self._loop.name
        return self._name or f"multiconn-{self.kind}"

    @property
    def address(self) -> AddressT:
        """The bound address: ``(host, port)``, or a path for a Unix socket server."""
        if self._address is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() or use `with`")
        return self._address

    def _format_address(self) -> str:
        raise NotImplementedError

    def _thread_name(self) -> str:
        # Inside a test the thread name carries the xdist worker and the test
        # ("multiconn-echo[gw0:test_x]-127.0.0.1:41234"), so a stray thread names its owner.
        return self._name or f"multiconn-{self.kind}{thread_tag()}-{self._format_address()}"

    # -- life cycle --------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        """``stop()`` was called (its counts change no more once it returned)."""
        return self._stopped

    def needs_start(self) -> bool:
        return not self._started

    def _refuse_restart(self) -> None:
        if self._started:
            raise RuntimeError(f"{self!r} was already started; create a new server")

    def _start_loop(self, loop: Loop, timeout: float) -> None:
        """Track this service as running and start its own loop thread (undone on failure)."""
        track_server(self)
        try:
            loop.start(timeout)
        except BaseException:
            loop.stop(timeout)
            untrack_server(self)
            raise

    def check(self) -> None:
        """Re-raise, in the caller, the first exception the loop thread recorded."""
        if self._loop is not None:
            self._loop.check()

    def _error_count(self) -> int:
        return len(self._loop.errors) if self._loop is not None else 0

    # -- calling into the loop thread ---------------------------------------------------------
    def _in_loop(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """``fn()`` in the loop thread while the service runs (bounded by ``timeout``, default
        :attr:`timeout`), else here: before ``start()`` and after ``stop()`` nothing else
        touches its state.  The one such call of every loop-thread service."""
        loop = self._loop
        if self._started and not self._stopped and loop is not None and loop.is_running():
            result: T = loop.run_sync(fn, self.timeout if timeout is None else timeout)
            return result
        return fn()

    # -- waiting for the loop thread ---------------------------------------------------------
    def notify(self) -> None:
        """Wake every thread waiting on this service to look again (connections, handlers and
        the loop call it on each change a wait may be for)."""
        # Cheap when nobody waits: one attribute read.  A waiter increments _waiters before
        # it reads _changes and takes its snapshot, so a change made before we read zero here
        # is in that snapshot (the GIL orders both), and a later one bumps _changes under the
        # condition, where the waiter checks it before it sleeps.
        if self._waiters:
            with self._cond:
                self._changes += 1
                self._cond.notify_all()

    def _check_if_errors(self) -> None:
        if self._error_count():
            self.check()

    def _wait_until(
        self,
        take: Callable[[], T],
        predicate: Callable[[T], bool],
        timeout: float,
        what: str,
        *,
        check: Callable[[], None],
        describe: Callable[[T], str],
        stop_ends_wait: bool = False,
    ) -> T:
        """Block until ``predicate(take())`` holds, re-checking whenever the loop notifies
        (the one wait, ``core.wait.wait_loop``, blocking on this service's condition).

        ``check()`` runs after every ``take()`` (it re-raises the loop thread's errors);
        ``describe(value)`` ends the :class:`WaitTimeout` message.  A wait that cannot succeed
        raises :class:`WaitImpossible` at once: called from this service's own loop thread
        (nothing changes while it blocks the loop), or, with ``stop_ends_wait``, once the
        service has stopped (:meth:`_finished`: its counts no longer change).
        """
        seen = 0
        value: T

        def poll() -> bool:
            nonlocal seen, value
            seen = self._changes
            # Taken in the loop thread, never under the condition: the loop thread takes
            # the condition to notify.
            value = take()
            check()
            if predicate(value):
                return True
            self._refuse_hopeless_wait(
                what, functools.partial(describe, value), stop_ends_wait=stop_ends_wait
            )
            return False

        def until_notified(remaining: float) -> None:
            with self._cond:
                if self._changes == seen:  # else a change came since poll() looked
                    self._cond.wait(remaining)

        with self._cond:
            self._waiters += 1
        try:
            if wait_loop(poll, until_notified, timeout):
                return value
        finally:
            with self._cond:
                self._waiters -= 1
        raise WaitTimeout(
            f"{self!r}: timed out after {timeout}s waiting for {what}\n{describe(value)}"
        )

    def _finished(self) -> bool:
        """Stopped, and done closing: nothing this service counts can change any more."""
        return self._stopped

    def _refuse_hopeless_wait(
        self, what: str, state: Callable[[], str], *, stop_ends_wait: bool
    ) -> None:
        loop = self._loop
        if loop is not None and loop.in_loop_thread():
            raise WaitImpossible(
                f"{self!r}: cannot wait for {what} from the server's own loop thread (an "
                "on_event callback or a handler): the loop makes no progress while it waits. "
                f"Wait from the test thread, or look again in a later callback.\n{state()}"
            )
        if stop_ends_wait and self._finished():
            raise WaitImpossible(
                f"{self!r}: {what} cannot happen any more: the server is stopped, so its "
                f"counts no longer change.  Wait before stop().\n{state()}"
            )
