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

from collections.abc import Callable
from typing import Generic, Self, TypeVar

from pytest_multiconn.core.blocking import refuse_in_event_loop, to_thread
from pytest_multiconn.core.lifecycle import LoopService
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Loop
from pytest_multiconn.core.registry import untrack_server
from pytest_multiconn.faults.params import integer, seconds
from pytest_multiconn.udp.endpoint import DatagramEndpoint, address_of

StatsT = TypeVar("StatsT")
T = TypeVar("T")


class UDPServerBase(LoopService[tuple[str, int]], Generic[StatsT]):
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
        super().__init__(name)
        self._endpoint: DatagramEndpoint | None = None

    # -- naming ------------------------------------------------------------------------------
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
        self._refuse_restart()
        timeout = self.timeout if timeout is None else timeout
        self._loop = loop = Loop("pending")  # the endpoint needs a loop; renamed once bound
        try:
            endpoint = self._open()
        except BaseException:
            loop.close()  # its wake-up socketpair
            self._loop = None
            raise
        self._started = True
        self._endpoint = endpoint
        self._address = self._address_from(endpoint)
        loop.name = self._thread_name()
        loop.on_error = lambda record: self.notify()
        endpoint.attach()
        self._start_loop(loop, timeout)
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
            self.notify()

    def open_sockets(self) -> list[str]:
        """Sockets still open (for the plugin's leak check): empty once stopped."""
        endpoint = self._endpoint
        if endpoint is not None and endpoint.sock.fileno() != -1:
            return [repr(endpoint)]
        return []

    # -- observing -----------------------------------------------------------------------------
    def _stats(self) -> StatsT:
        raise NotImplementedError

    def stats(self) -> StatsT:
        """Counters, consistent at one instant (taken in the loop thread)."""
        return self._in_loop(self._stats)

    def wait_for(
        self,
        predicate: Callable[[StatsT], bool],
        timeout: float | None = None,
        what: str = "a condition",
    ) -> StatsT:
        """Block until ``predicate(stats)`` holds; raise :class:`WaitTimeout` naming ``what``."""
        self._refuse_blocking("wait_for")
        return self._wait_on(self.stats, predicate, timeout, what)

    async def await_for(
        self,
        predicate: Callable[[StatsT], bool],
        timeout: float | None = None,
        what: str = "a condition",
    ) -> StatsT:
        """Awaitable twin of :meth:`wait_for` (asyncio or trio; needs ``[async]``)."""
        return await to_thread(self.wait_for, predicate, timeout, what)

    #: How the BlockingCallError's advice names an instance (``await server.await_for(...)``).
    _twin_subject = "server"

    def _refuse_blocking(self, call: str) -> None:
        """Every public wait refuses a running event loop by its own name, naming its twin
        (see ``core/blocking.py``)."""
        refuse_in_event_loop(
            f"{type(self).__name__}.{call}()", f"await {self._twin_subject}.a{call}(...)"
        )

    def _wait_on(
        self,
        take: Callable[[], T],
        predicate: Callable[[T], bool],
        timeout: float | None,
        what: str,
    ) -> T:
        """Block until ``predicate(take())`` holds, re-checking whenever the loop notifies."""
        return self._wait_until(
            take, predicate, self.timeout if timeout is None else timeout, what,
            check=self.check, describe=_describe, stop_ends_wait=True,
        )


def _describe(value: object) -> str:
    return f"state: {value}"
