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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, Self

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.checks import MAX_C_INT, check_count, check_seed
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT
from pytest_multiconn.core.seed import get_run_seed
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.faults.table import (
    FaultHolder,
    StreamFaults,
    check_fault,
    stream_table,
)
from pytest_multiconn.faults.toxics.base import Toxic
from pytest_multiconn.servers.faulting import ConnectionFaults

if TYPE_CHECKING:
    import ssl

    from pytest_multiconn.tls.config import ServerTLS, TLSConfig

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
        return self._conn.closed or self._conn.finish_pending

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
    """One accepted connection driving one handler (made by ``server.protocol_factory()``).

    With stream faults (the server's ``faults=`` / ``add()``), what the handler writes goes
    through the downstream pipe before the socket, and what the socket delivers through the
    upstream pipe before ``data_received`` (:mod:`pytest_multiconn.servers.faulting`); the
    connection is that pipe's :class:`~pytest_multiconn.servers.faulting.FaultHost`.
    """

    def __init__(self, server: ProtocolServer, sock: socket.socket, addr: SocketAddress) -> None:
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
        #: Accept order on this server (1 = first): with the seed, it picks a fault's numbers.
        self.number = server.next_number()
        #: This connection's fault pipes (None: no fault has applied to it).
        self.faults: ConnectionFaults | None = None
        self.made = False
        self._finish_after_faults = False

    def connection_made(self) -> None:
        self.made = True
        self.server.install_faults(self)
        if not self.closed:
            self.handler.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        observer = self.server.on_event
        if observer is not None:
            observer("data", self, data)
        faults = self.faults
        if faults is not None and faults.up is not None:
            faults.up.feed(data)
        else:
            self.handler.data_received(data)
        self.server.notify()

    def on_eof(self) -> None:
        faults = self.faults
        if faults is not None and faults.up is not None:
            faults.up.feed_eof()
        else:
            self.pass_in_eof()

    # -- faults: writes go through the downstream pipe ---------------------------------------
    def fault_pipes(self) -> ConnectionFaults:
        """This connection's fault pipes (made on first use)."""
        faults = self.faults
        if faults is None:
            faults = self.faults = ConnectionFaults(
                self, self.number, seed=self.server.seed, high_water=self.high_water,
                low_water=self.low_water,
            )
        return faults

    def write(self, data: bytes | bytearray | memoryview) -> None:
        faults = self.faults
        down = None if faults is None else faults.down
        if down is None:
            super().write(data)
        elif data and not down.eof_in and not self.closed:
            down.feed(bytes(data))

    def write_eof(self) -> None:
        faults = self.faults
        down = None if faults is None else faults.down
        if down is None:
            super().write_eof()
        elif not down.eof_in and not self.closed:
            down.feed_eof()

    def finish(self) -> None:
        """Close once flushed: after what the downstream faults still hold (their end of
        stream, which a ``SlowClose`` delays, goes through them too)."""
        faults = self.faults
        down = None if faults is None else faults.down
        if down is None or self.closed or down.eof_out:
            super().finish()
            return
        self._finish_after_faults = True
        if not down.eof_in:
            down.feed_eof()

    # -- FaultHost: what the pipes hand on ----------------------------------------------------
    def pass_in(self, data: bytes) -> None:
        self.handler.data_received(data)
        self.server.notify()

    def pass_in_eof(self) -> None:
        if not self.handler.eof_received():
            self.finish()

    def pass_out(self, data: bytes) -> None:
        super().write(data)

    def unsent(self) -> int:
        """Bytes written and not yet delivered to the peer (``FaultHost``): buffered here or
        in the TLS layer, and unacknowledged in the kernel's send queue."""
        layer = self.layer
        held = 1 if layer is not None and layer.backlog() else 0  # ciphertext, size unknown
        return self.buffered + held + self._kernel_queued()

    def pass_out_eof(self) -> None:
        if self._finish_after_faults:
            super().finish()
        else:
            super().write_eof()

    def finish_now(self) -> None:
        """Close once the socket's output is flushed, whatever the faults still hold (a
        fault's own ``finish_connection``)."""
        super().finish()

    def notify(self) -> None:
        self.server.notify()

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
        if self.faults is not None:
            self.faults.stop()
        self.server.lost_later(self, exc)

    def call_connection_lost(self, exc: BaseException | None = None) -> None:
        """The handler's ``connection_lost(exc)`` (the server calls it once, from
        :meth:`ProtocolServer.lost_later`'s callback or when it stops)."""
        self.handler.connection_lost(exc if isinstance(exc, Exception) or exc is None else None)


class ProtocolServer(StreamFaults, ServerBase):
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
        faults: Iterable[Toxic] = (),
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        # protocol_factory is positional-only and tls a named keyword: subclasses that fix
        # the factory (EchoServer) take ``**kwargs`` through to here, and the marker's
        # keyword check follows those up the MRO (plugin ``keywords_of``): it must offer
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
        self._closing_all = False  # in _close_everything: it runs connection_lost itself
        seed = check_seed(seed, optional=True)
        #: Seeds the faults' random numbers (default: the run seed, ``--multiconn-seed``).
        self.seed = get_run_seed() if seed is None else seed
        self._fault_table = stream_table(f"server {self.name}")
        for fault in (faults,) if isinstance(faults, Toxic) else tuple(faults):
            self._fault_table.add(check_fault(fault), "downstream", 1.0, None)
        self._accept_numbers = 0
        self._accepting = True
        self._listen_backlog: int | None = None

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """A client SSLContext that trusts this server (None for plaintext)."""
        return self.tls.client_context if self.tls is not None else None

    def _close_everything(self) -> None:
        # A stop closes every connection from a loop callback of its own (not from inside a
        # handler), and the loop may never turn again (the server's own loop ends; a shared
        # loop's release returns): run the scheduled connection_lost calls now, once each.
        # The connections it closes are not queued for a later turn (lost_later): they are
        # run right below, so a stop queues nothing and wakes no loop thread for nothing.
        self._closing_all = True
        try:
            super()._close_everything()
        finally:
            self._closing_all = False
        while self._lost_pending:
            conn = next(iter(self._lost_pending.values()))
            try:
                self._run_lost(conn, conn.error)
            except Exception as exc:  # noqa: BLE001 - recorded, re-raised by check()
                self.loop.report_error(exc, conn)

    def may_close_off_thread(self) -> bool:
        # A handler's connection_lost still to run must run in the loop thread.
        return not self._lost_pending and super().may_close_off_thread()

    def lost_later(self, conn: ProtocolConnection, exc: BaseException | None) -> None:
        """Loop thread: ``conn`` closed; its handler's ``connection_lost`` runs on a later
        loop turn (or when the server stops), and only then is ``conn`` counted closed."""
        self._lost_pending[conn.id] = conn
        if not self._closing_all:
            self.loop.call_soon(self._run_lost, conn, exc)

    def _run_lost(self, conn: ProtocolConnection, exc: BaseException | None) -> None:
        if self._lost_pending.pop(conn.id, None) is None:
            return  # run already (a stop ran the pending ones)
        try:
            conn.call_connection_lost(exc)
        finally:
            self.connection_closed(conn)

    # -- stream faults: the proxy's table and engine (thread-safe) ---------------------------
    # add / update / remove / clear / faults: StreamFaults (faults/table.py), exactly as
    # FaultProxy's.
    def _fault_holders(self) -> list[FaultHolder]:
        return [conn.fault_pipes() for conn in self._faultable()]

    def _faultable(self) -> list[ProtocolConnection]:
        """Live connections that faults act on (a fast one leaves its fast path first)."""
        found = []
        for conn in list(self._conns.values()):
            general = self.general_connection(conn)
            if general is not None and general.made and not general.closed:
                found.append(general)
        return found

    def general_connection(self, conn: Connection) -> ProtocolConnection | None:
        """``conn`` on the general path, where faults act (None: it cannot take faults).
        :class:`~pytest_multiconn.EchoServer` moves a plain echo connection off its inline
        path here."""
        return conn if isinstance(conn, ProtocolConnection) else None

    def install_faults(self, conn: ProtocolConnection) -> None:
        """The table's faults join a new connection (from its ``connection_made``)."""
        if self._fault_table:
            pipes = conn.fault_pipes()
            for entry in list(self._fault_table.entries.values()):
                pipes.add(entry)

    def next_number(self) -> int:
        """The accept number of a new connection (1 = first)."""
        self._accept_numbers += 1
        return self._accept_numbers

    # -- listener faults: stop accepting ------------------------------------------------------
    def pause_accepting(self, backlog: int | None = None) -> None:
        """The listener stops calling accept(); ``backlog=n`` also shrinks its queue to ``n``.

        Clients queue in the kernel until the backlog is full, then connect() hangs to its
        timeout.  What a client sees, on Linux: the kernel completes the handshake by itself
        for up to ``backlog + 1`` connections, so their ``connect()`` *succeeds* and their data
        is accepted into the server's receive buffer, but nothing is ever answered.  Once that
        queue is full, new SYNs are dropped without a reply, the client's kernel retransmits
        them, and ``connect()`` blocks until the client's own timeout (``TimeoutError``), never
        ``ConnectionRefusedError``.  :meth:`resume_accepting` serves the queued connections.
        """
        if backlog is not None:
            check_count(backlog, "backlog", maximum=MAX_C_INT)  # listen() takes a C int

        def go() -> None:
            self._accepting = False
            self._apply_listener(backlog)

        self._in_loop(go)

    def resume_accepting(self) -> None:
        """Accept again (and give the listener its own backlog back)."""

        def go() -> None:
            self._accepting = True
            self._apply_listener(None)

        self._in_loop(go)

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Start as :class:`~pytest_multiconn.lowlevel.ServerBase` does; paused before (by
        :meth:`pause_accepting`), the listener starts paused, with the backlog asked for, so a
        client that connects once ``start()`` returned finds the queue it was promised."""
        super().start(timeout)
        if not self._accepting:
            self._in_loop(lambda: self._apply_listener(self._listen_backlog))
        return self

    @property
    def accepting(self) -> bool:
        """False between :meth:`pause_accepting` and :meth:`resume_accepting`."""
        return self._accepting

    def may_accept(self) -> bool:
        if not self._accepting:
            # Paused before start(): the listener stops at its first event (the kernel
            # queues connections meanwhile, as it does while paused).
            self._apply_listener(self._listen_backlog)
            return False
        return super().may_accept()

    def _apply_listener(self, backlog: int | None) -> None:
        self._listen_backlog = backlog
        listener = self._listener
        if listener is None or listener.sock.fileno() == -1:
            return
        # listen() again on a listening socket just changes its backlog (Linux, BSD).
        listener.sock.listen(self.backlog if backlog is None else backlog)
        if self._accepting:
            listener.resume()
        else:
            listener.pause()

    def make_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection:
        """The connection for one accepted socket: :meth:`fast_connection` where nothing
        needs the general path (no layer, no observer, no fault) and it offers one, else
        :attr:`connection_class`."""
        if self.layer_factory is None and self.on_event is None and not self._fault_table:
            fast = self.fast_connection(sock, addr)
            if fast is not None:
                return fast
        return self.connection_class(self, sock, addr)

    def fast_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection | None:
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
    # Imported here: TLS brings trustme and cryptography (40 ms), which a plaintext
    # server, the usual fixture, never needs (issue 25).
    from pytest_multiconn.tls.config import server_tls

    layer = server_tls(tls)
    kwargs["layer"] = layer
    return layer
