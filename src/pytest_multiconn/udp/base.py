"""What every UDP server of ours shares: a loop thread, a life cycle, leak tracking, waits.

:class:`UDPServerBase` is to datagram servers what :class:`~pytest_multiconn.lowlevel.ServerBase`
is to stream servers: ``start()`` binds and starts a loop thread named after the running test,
``stop()`` closes every socket and joins it, ``with`` does both and re-raises loop-thread
errors, the registry tracks it so the plugin's leak check names a server left running, and
``wait_for(predicate)`` blocks on a condition the loop thread notifies (no polling), bounded
by a timeout.  Subclasses bind their sockets in :meth:`_open` and describe their counters in
:meth:`_stats`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Loop
from pytest_multiconn.core.registry import (
    skip_frames_of,
    thread_tag,
    track_server,
    untrack_server,
)
from pytest_multiconn.errors import WaitTimeout
from pytest_multiconn.faults.params import integer, seconds
from pytest_multiconn.udp.endpoint import DatagramEndpoint, address_of

# A leaked server's origin names the test's line, not UDPServerBase.start().
skip_frames_of(__file__)

StatsT = TypeVar("StatsT")
T = TypeVar("T")


class UDPServerBase(Generic[StatsT]):
    """A UDP socket (or several) served by a background selector loop thread."""

    kind = "udp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        max_queue: int = 1024,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
    ) -> None:
        owner = type(self).__name__
        self._host, self._port = address_of(host, port, allow_remote=allow_remote, role="bind")
        self.allow_remote = allow_remote
        self.max_queue = int(integer(1)(owner, "max_queue", max_queue))
        self.timeout = float(seconds()(owner, "timeout", timeout))
        self._name = name
        self._loop: Loop | None = None
        self._address: tuple[str, int] | None = None
        self._endpoint: DatagramEndpoint | None = None
        self._cond = threading.Condition()
        self._waiters = 0
        self._changes = 0
        self._started = False
        self._stopped = False

    # -- naming ------------------------------------------------------------------------------
    @property
    def loop(self) -> Loop:
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() or use `with`")
        return self._loop

    @property
    def name(self) -> str:
        if self._loop is not None:
            return self._loop.name
        return self._name or f"multiconn-{self.kind}"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server's socket is bound to."""
        if self._address is None:
            raise RuntimeError(f"{type(self).__name__} is not started; call start() or use `with`")
        return self._address

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def _format_address(self) -> str:
        host, port = self.address
        return f"udp:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"

    def __repr__(self) -> str:
        if self._address is None:
            where = "not started"
        else:
            where = f"on {self._format_address()}" + (" (stopped)" if self._stopped else "")
        errors = len(self._loop.errors) if self._loop is not None else 0
        return f"<{type(self).__name__} {self.name!r} {where} errors={errors}{self._repr_extra()}>"

    def _repr_extra(self) -> str:
        return ""

    # -- life cycle --------------------------------------------------------------------------
    def _open(self) -> DatagramEndpoint:
        """Bind and make the main endpoint (loop thread not running yet)."""
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        """Bind, start the loop thread; return once it serves datagrams."""
        if self._started:
            raise RuntimeError(f"{self!r} was already started; create a new server")
        timeout = self.timeout if timeout is None else timeout
        self._loop = Loop("pending")  # the endpoint needs a loop; renamed once bound
        try:
            endpoint = self._open()
        except BaseException:
            self._loop.close()  # its wake-up socketpair
            self._loop = None
            raise
        self._started = True
        self._endpoint = endpoint
        self._address = (self._address_from(endpoint))
        self._loop.name = self._name or (
            f"multiconn-{self.kind}{thread_tag()}-{self._format_address()}"
        )
        self._loop.on_error = lambda record: self._notify()
        endpoint.attach()
        track_server(self)
        try:
            self._loop.start(timeout)
        except BaseException:
            self._loop.stop(timeout)
            untrack_server(self)
            raise
        return self

    @staticmethod
    def _address_from(endpoint: DatagramEndpoint) -> tuple[str, int]:
        name = endpoint.sock.getsockname()
        return str(name[0]), int(name[1])

    def stop(self, timeout: float | None = None) -> None:
        """Close every socket and join the loop thread (idempotent)."""
        if self._stopped or not self._started:
            self._stopped = True
            return
        self._stopped = True
        try:
            self.loop.stop(self.timeout if timeout is None else timeout)
        finally:
            untrack_server(self)
            self._notify()

    def check(self) -> None:
        """Re-raise, in the caller, the first exception the loop thread recorded."""
        if self._loop is not None:
            self._loop.check()

    def __enter__(self) -> Self:
        if not self._started:
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

    def open_sockets(self) -> list[str]:
        """Sockets still open (for the plugin's leak check): empty once stopped."""
        endpoint = self._endpoint
        if endpoint is not None and endpoint.sock.fileno() != -1:
            return [repr(endpoint)]
        return []

    # -- observing -----------------------------------------------------------------------------
    def _run(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """``fn()`` in the loop thread while it runs, else here."""
        if self._started and not self._stopped and self.loop.is_running():
            return self.loop.run_sync(fn, self.timeout if timeout is None else timeout)
        return fn()

    def _stats(self) -> StatsT:
        raise NotImplementedError

    def stats(self) -> StatsT:
        """Counters, consistent at one instant (taken in the loop thread)."""
        return self._run(self._stats)  # type: ignore[no-any-return]

    def _notify(self) -> None:
        # Cheap when nobody waits; see ServerBase._notify for why the order is safe.
        if self._waiters:
            with self._cond:
                self._changes += 1
                self._cond.notify_all()

    def wait_for(
        self,
        predicate: Callable[[StatsT], bool],
        timeout: float | None = None,
        what: str = "a condition",
    ) -> StatsT:
        """Block until ``predicate(stats)`` holds; raise :class:`WaitTimeout` naming ``what``."""
        return self._wait_on(self.stats, predicate, timeout, what)

    def _wait_on(
        self,
        take: Callable[[], T],
        predicate: Callable[[T], bool],
        timeout: float | None,
        what: str,
    ) -> T:
        """Block until ``predicate(take())`` holds, re-checking whenever the loop notifies."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
        try:
            while True:
                seen = self._changes
                # Taken in the loop thread, never under the condition: the loop thread takes
                # the condition to notify.
                value = take()
                self.check()
                if predicate(value):
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopped:
                    break
                with self._cond:
                    if self._changes == seen:
                        self._cond.wait(remaining)
        finally:
            with self._cond:
                self._waiters -= 1
        raise WaitTimeout(
            f"{self!r}: timed out after {timeout}s waiting for {what}\nstate: {value}"
        )
