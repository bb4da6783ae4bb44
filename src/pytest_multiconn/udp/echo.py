"""A datagram echo server: every datagram is sent back, unchanged, to the address it came from.

Datagram boundaries are the point: one datagram in is one datagram out, the same bytes, so
a client can tell loss, duplication, reordering and corruption apart (what
:class:`~pytest_multiconn.udp.MultiDatagramClient` checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_multiconn.core.blocking import to_thread
from pytest_multiconn.udp.base import UDPServerBase
from pytest_multiconn.udp.endpoint import DatagramEndpoint, bind_datagram


@dataclass(frozen=True)
class UDPStats:
    """Counters of one UDP server, read at one instant."""

    datagrams_in: int
    bytes_in: int
    datagrams_out: int
    bytes_out: int
    #: Echoes dropped because the send queue was full (or the server stopped with some queued).
    dropped: int
    #: Datagrams the kernel refused (ICMP errors, EMSGSIZE).
    errors: int
    #: Echoes waiting for the kernel's send buffer now.
    queued: int
    peak_queued: int


class UDPEchoServer(UDPServerBase[UDPStats]):
    """Echo every datagram back to its sender, on a background loop thread.

    ``host`` is ``127.0.0.1`` (default), ``::1`` or another loopback address
    (``allow_remote=True`` for others); ``port`` 0 picks an ephemeral one.  Echoes the kernel
    cannot take at once are queued, up to ``max_queue``, beyond which they are dropped and
    counted (``stats().dropped``).  Use as a context manager, or ``start()`` / ``stop()``.
    """

    kind = "udp-echo"
    # __init__: UDPServerBase's (host, port, *, allow_remote, max_queue, timeout, name).

    def _open(self) -> DatagramEndpoint:
        sock = bind_datagram(self._host, self._port, allow_remote=self.allow_remote)
        endpoint = DatagramEndpoint(self.loop, sock, self._echo, max_queue=self.max_queue,
                                    label="echo")
        endpoint.on_drain = self.notify
        return endpoint

    def _echo(self, data: bytes, addr: Any) -> None:
        endpoint = self._endpoint
        assert endpoint is not None  # noqa: S101 - set before the loop reads anything
        endpoint.send(data, addr)
        self.notify()

    def _stats(self) -> UDPStats:
        e = self._endpoint
        if e is None:
            return UDPStats(0, 0, 0, 0, 0, 0, 0, 0)
        return UDPStats(e.datagrams_in, e.bytes_in, e.datagrams_out, e.bytes_out, e.dropped,
                        e.errors, e.queued, e.peak_queued)

    def _repr_extra(self) -> str:
        e = self._endpoint
        return "" if e is None else f" in={e.datagrams_in} out={e.datagrams_out}"

    def report(self, limit: int = 16) -> str:
        """Its repr and counters (the plugin's ``multiconn`` report section)."""
        try:
            stats = self._in_loop(self._stats, min(self.timeout, 2.0))
        except Exception as exc:  # noqa: BLE001 - a report must not raise in a failing test
            return f"{self!r}\n  (counters unavailable: {type(exc).__name__}: {exc})"
        return f"{self!r}\n  counters: {stats}"

    # -- bounded waits ---------------------------------------------------------------------
    def wait_for_datagrams(self, n: int, timeout: float | None = None) -> UDPStats:
        """Wait until ``n`` datagrams have been received in all."""
        self._refuse_blocking("wait_for_datagrams")
        return self._wait_on(self.stats, lambda s: s.datagrams_in >= n, timeout,
                             f"{n} datagrams received")

    def wait_for_echoes(self, n: int, timeout: float | None = None) -> UDPStats:
        """Wait until ``n`` echoes have been handed to the kernel in all."""
        self._refuse_blocking("wait_for_echoes")
        return self._wait_on(self.stats, lambda s: s.datagrams_out >= n, timeout,
                             f"{n} echoes sent")

    def wait_for_bytes(self, n: int, timeout: float | None = None) -> UDPStats:
        """Wait until ``n`` bytes have been received in all."""
        self._refuse_blocking("wait_for_bytes")
        return self._wait_on(self.stats, lambda s: s.bytes_in >= n, timeout,
                             f"{n} bytes received")

    def wait_for_idle(self, timeout: float | None = None) -> UDPStats:
        """Wait until no echo is queued (everything received was sent or dropped)."""
        self._refuse_blocking("wait_for_idle")
        return self._wait_on(self.stats, lambda s: s.queued == 0, timeout, "no queued echoes")

    # -- awaitable twins (see core/blocking.py) ------------------------------------------------
    async def await_for_datagrams(self, n: int, timeout: float | None = None) -> UDPStats:
        """Awaitable twin of :meth:`wait_for_datagrams`."""
        return await to_thread(self.wait_for_datagrams, n, timeout)

    async def await_for_echoes(self, n: int, timeout: float | None = None) -> UDPStats:
        """Awaitable twin of :meth:`wait_for_echoes`."""
        return await to_thread(self.wait_for_echoes, n, timeout)

    async def await_for_bytes(self, n: int, timeout: float | None = None) -> UDPStats:
        """Awaitable twin of :meth:`wait_for_bytes`."""
        return await to_thread(self.wait_for_bytes, n, timeout)

    async def await_for_idle(self, timeout: float | None = None) -> UDPStats:
        """Awaitable twin of :meth:`wait_for_idle`."""
        return await to_thread(self.wait_for_idle, timeout)
