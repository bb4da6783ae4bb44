"""Host any protocol on the loop: a handler shaped like asyncio's ``Protocol``.

``ProtocolServer(MyProtocol)`` calls ``MyProtocol()`` for each accepted connection and drives
it exactly as asyncio would: ``connection_made(transport)``, ``data_received(data)``,
``eof_received()`` (return True to keep the connection half-open, as in asyncio; anything else
closes it once pending output is flushed) and ``connection_lost(exc)``, which, as in asyncio,
runs on a later loop turn, never inside a transport call (a write to a peer that reset is
dropped, and the handler's running callback finishes first).  An
``asyncio.Protocol`` subclass works unchanged, so a fake of your peer costs what an
:class:`~pytest_multiconn.EchoServer` costs: a thread and a listening socket, started in
about a millisecond.

Flow control is on by default: when the transport's output passes the high-water mark the
handler's ``pause_writing()`` runs; a handler without one has the connection stop reading
instead, so a client that never reads cannot make the fake buffer without bound.

Which connection drives a handler is decided in one place, :meth:`ProtocolServer.make_connection`:
:attr:`ProtocolServer.connection_class` (the general path: any layer, an observer, any
handler), unless the server has neither a layer (TLS) nor an ``on_event`` observer and
:meth:`ProtocolServer.fast_connection` returns a tuned connection.  That hook is the one
extension point for a hand-inlined hot path: the default returns None, and
:class:`~pytest_multiconn.EchoServer` returns its plain echo connection when its factory is
exactly :class:`~pytest_multiconn.servers.EchoProtocol`.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.tls.config import ServerTLS, TLSConfig, server_tls

logger = logging.getLogger(__name__)

#: asyncio's ``constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES``: writes after the connection
#: was lost are dropped, and from this count on each one logs a warning.
LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5


class Transport:
    """What a handler writes to: asyncio's transport methods, over one loop connection.

    As in asyncio, a write after the connection was lost (the peer reset, or the transport
    closed) is dropped, counted, and from the fifth one on logs ``socket.send() raised
    exception.``; the handler's ``connection_lost`` never runs inside a transport call.
    """

    __slots__ = ("_conn", "_conn_lost")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._conn_lost = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        conn = self._conn
        if conn.closed:
            self._lost_write()
            return
        conn.write(data)

    def _lost_write(self) -> None:
        # asyncio's count: the loss itself is 1, each dropped write adds one, and a write
        # made when the count has reached the threshold warns.
        lost = self._conn_lost or 1
        if lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning("socket.send() raised exception.")
        self._conn_lost = lost + 1

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        """Half-close once pending output is flushed."""
        self._conn.write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        """Close once pending output is flushed (asyncio's ``close``)."""
        self._conn.finish()

    def abort(self) -> None:
        """Close at once with an RST, dropping pending output."""
        self._conn.reset()

    def is_closing(self) -> bool:
        return self._conn.closed or self._conn._finish_pending

    def pause_reading(self) -> None:
        self._conn.pause_reading()

    def resume_reading(self) -> None:
        self._conn.resume_reading()

    def is_reading(self) -> bool:
        return not self._conn.reading_paused

    def get_write_buffer_size(self) -> int:
        return self._conn.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        conn = self._conn
        if name == "peername":
            return conn.peer
        if name == "socket":
            return conn.sock
        if name == "sockname":
            try:
                return conn.sock.getsockname()
            except OSError:
                return default
        if name == "connection":
            return conn
        return default

    @property
    def connection(self) -> Connection:
        """The loop connection underneath (counters, transcript)."""
        return self._conn


class Handler(Protocol):
    """The narrow interface a hosted protocol implements (asyncio's ``Protocol`` fits)."""

    def connection_made(self, transport: Any) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


HandlerFactory = Callable[[], Handler]


class ProtocolConnection(Connection):
    """One accepted connection driving one handler (made by ``server.protocol_factory()``)."""

    def __init__(self, server: ProtocolServer, sock: socket.socket, addr: Any) -> None:
        super().__init__(
            server.loop,
            sock,
            addr,
            high_water=server.high_water,
            low_water=server.low_water,
            transcript_limit=server.transcript_limit,
        )
        self.server = server
        self.handler: Handler = server.protocol_factory()
        self.transport = Transport(self)

    def connection_made(self) -> None:
        self.handler.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        observer = self.server.on_event
        if observer is not None:
            observer("data", self, data)
        self.handler.data_received(data)
        if self.server._waiters:
            self.server._notify()

    def on_eof(self) -> None:
        if not self.handler.eof_received():
            self.finish()

    def pause_writing(self) -> None:
        hook = getattr(self.handler, "pause_writing", None)
        if hook is None:
            self.pause_reading()  # the peer is not reading: stop reading from it
        else:
            hook()

    def resume_writing(self) -> None:
        hook = getattr(self.handler, "resume_writing", None)
        if hook is None:
            self.resume_reading()
        else:
            hook()

    def connection_lost(self, exc: BaseException | None) -> None:
        # asyncio never re-enters a protocol: a transport that fails inside write() (the peer
        # reset) or closes inside close() calls connection_lost on a later loop turn
        # (``call_soon``), so the handler's running callback finishes with its state intact.
        # The server counts the connection as closed only then, so a wait_for_closed()
        # returns after the handler's connection_lost has run.
        self.server._lost_pending[self.id] = self
        self.loop.call_soon(self.call_connection_lost, exc)

    def call_connection_lost(self, exc: BaseException | None = None) -> None:
        """The handler's ``connection_lost(exc)``, exactly once (scheduled by
        ``connection_lost``; a server that stops runs what is still pending)."""
        if self.server._lost_pending.pop(self.id, None) is None:
            return
        try:
            self.handler.connection_lost(exc if isinstance(exc, Exception) or exc is None else None)
        finally:
            self.server._connection_closed(self)


class ProtocolServer(ServerBase):
    """A server on its own loop thread running ``protocol_factory()`` per connection.

    Takes every :class:`~pytest_multiconn.lowlevel.ServerBase` option (``port``, ``tls``,
    ``max_connections``, ``high_water``...).
    """

    kind = "protocol"

    #: The general path: the connection class that drives ``protocol_factory()`` handlers
    #: under any layer, with an observer, for any handler.  Called as
    #: ``connection_class(server, sock, addr)``.
    connection_class: type[ProtocolConnection] = ProtocolConnection

    def __init__(
        self,
        protocol_factory: HandlerFactory,
        /,
        *args: Any,
        tls: bool | TLSConfig | ssl.SSLContext | ServerTLS | None = None,
        **kwargs: Any,
    ) -> None:
        # protocol_factory is positional-only and tls a named keyword: subclasses that fix
        # the factory (EchoServer) take ``**kwargs`` through to here, and the marker's
        # keyword check follows those up the MRO (plugin ``_keywords_of``): it must offer
        # ``tls`` and must not offer ``protocol_factory``.
        if not callable(protocol_factory):
            raise TypeError(
                "protocol_factory must be a callable returning a handler (for example the "
                f"handler class itself), got {protocol_factory!r}"
            )
        kwargs["tls"] = tls
        self.tls = take_tls(kwargs)
        super().__init__(*args, **kwargs)
        self.protocol_factory = protocol_factory
        # Closed connections whose handler's connection_lost is scheduled but has not run.
        self._lost_pending: dict[int, ProtocolConnection] = {}

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """A client SSLContext that trusts this server (None for plaintext)."""
        return self.tls.client_context if self.tls is not None else None

    def _close_everything(self) -> None:
        # A stop closes every connection from a loop callback of its own (not from inside a
        # handler), and the loop may never turn again (the server's own loop ends; a shared
        # loop's release returns): run the scheduled connection_lost calls now, once each.
        super()._close_everything()
        while self._lost_pending:
            conn = next(iter(self._lost_pending.values()))
            try:
                conn.call_connection_lost(conn.error)
            except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
                self.loop.report_error(exc, conn)

    def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
        """The connection for one accepted socket: :meth:`fast_connection` where nothing
        needs the general path (no layer, no observer) and it offers one, else
        :attr:`connection_class`.  Subclasses that always need the general path (the faulty
        servers) override this method and never reach :meth:`fast_connection`."""
        if self.layer_factory is None and self.on_event is None:
            fast = self.fast_connection(sock, addr)
            if fast is not None:
                return fast
        return self.connection_class(self, sock, addr)

    def fast_connection(self, sock: socket.socket, addr: Any) -> Connection | None:
        """Extension point: a tuned connection for a plain socket, or None (the default).

        Called only when the server has no layer (TLS) and no ``on_event`` observer.  What it
        returns must behave on the wire, in the counters and in the transcript exactly as
        :attr:`connection_class` driving ``protocol_factory()`` would: it is an optimisation,
        never a different server.  :class:`~pytest_multiconn.EchoServer` uses it for its
        inline echo; check ``self.protocol_factory`` before taking such a path, so that a
        different handler never gets it.
        """
        return None


def take_tls(kwargs: dict[str, Any]) -> ServerTLS | None:
    """Turn a server's ``tls=`` (True, a TLSConfig, an SSLContext) into the TLS layer its
    :class:`~pytest_multiconn.core.server.ServerBase` puts under every connection."""
    tls = kwargs.pop("tls", None)
    if tls is None or tls is False:
        return None
    layer = server_tls(tls)
    kwargs["layer"] = layer
    return layer
