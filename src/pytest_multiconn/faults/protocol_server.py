"""Server faults over any protocol: :class:`FaultyServer` hosts your handler (asyncio-shaped,
see :class:`~pytest_multiconn.servers.ProtocolServer`) and routes everything it writes through
the same faults as :class:`~pytest_multiconn.faults.FaultyEchoServer`: ``DelayEcho`` delays
the replies, ``ChunkedEcho`` cuts them into small sends, ``Stall`` swallows the requests,
``CloseAfter``/``ResetAfter`` cut the connection after N reply bytes, ``AcceptThenClose`` and
``StopAccepting`` act on the listener.
"""

from __future__ import annotations

import socket
from typing import Any

from pytest_multiconn.core.connection import Connection
from pytest_multiconn.faults.server import FaultyEchoConnection, FaultyEchoServer, _Cut
from pytest_multiconn.servers.protocol import HandlerFactory, Transport


class _FaultTransport(Transport):
    """The handler's writes go through the faults (delays and the send pipeline)."""

    __slots__ = ()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        conn = self._conn
        assert isinstance(conn, FaultyProtocolConnection)  # noqa: S101 - built only by it
        conn.emit(bytes(data))


class FaultyProtocolConnection(FaultyEchoConnection):
    """A faulty connection that runs a protocol handler instead of echoing."""

    server: FaultyServer

    def __init__(self, server: FaultyServer, sock: socket.socket, addr: Any, number: int
                 ) -> None:
        # The handler comes from ProtocolConnection (``server.protocol_factory()``, once);
        # its writes go through the faults.
        super().__init__(server, sock, addr, number)
        self.transport = _FaultTransport(self)

    def connection_made(self) -> None:
        super().connection_made()
        if not self.closed:
            self.handler.connection_made(self.transport)

    def _handle(self, data: bytes) -> None:
        self.handler.data_received(data)

    def emit(self, data: bytes) -> None:
        """Write one reply through the faults: delayed if a fault delays, else at once."""
        if self.closed or not data:
            return
        self._reply(data)

    def on_eof(self) -> None:
        if self.stalled or any(isinstance(f, _Cut) and f.cutting for f in self._faults):
            return
        if self.handler.eof_received():
            return  # the handler keeps the connection half-open
        super().on_eof()


class FaultyServer(FaultyEchoServer):
    """A server for ``protocol_factory()`` handlers that misbehaves on purpose: every server
    fault, for any protocol.  ``faults``, ``seed`` and every server option as for
    :class:`~pytest_multiconn.faults.FaultyEchoServer`."""

    kind = "faulty"

    def __init__(self, protocol_factory: HandlerFactory, *args: Any, **kwargs: Any) -> None:
        if not callable(protocol_factory):
            raise TypeError(f"protocol_factory must be a callable returning a handler, got "
                            f"{protocol_factory!r}")
        super().__init__(*args, **kwargs)
        self.protocol_factory = protocol_factory

    def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
        self._numbers += 1
        conn = FaultyProtocolConnection(self, sock, addr, self._numbers)
        conn._install(self._faults, live=False)
        return conn
