"""The echo server: :class:`EchoProtocol`, and :class:`EchoServer` hosting it with a fast path.

Echo is one protocol like any other: :class:`EchoProtocol` is an asyncio-shaped handler
(``data_received`` writes the bytes back, ``pause_writing`` pauses reading), and
``EchoServer`` is a :class:`~pytest_multiconn.servers.ProtocolServer` whose factory is
``EchoProtocol``, so ``ProtocolServer(EchoProtocol)`` and ``EchoServer()`` serve the same
bytes, counters and transcripts.  What ``EchoServer`` adds is speed: where nothing needs the
general path (no TLS layer, no ``on_event`` observer, no faults, the factory exactly
``EchoProtocol``) its :meth:`~pytest_multiconn.servers.ProtocolServer.fast_connection` makes
the tuned :class:`_PlainEchoConnection`, which does the same echo inline.  Everywhere else
(``tls=``, an observer, stream faults) connections are :class:`EchoConnection`: a
:class:`~pytest_multiconn.servers.protocol.ProtocolConnection` driving the handler.

``EchoServer(tls=True | TLSConfig | SSLContext)`` serves TLS: it hands its
:class:`~pytest_multiconn.tls.config.ServerTLS` to :class:`~pytest_multiconn.core.server.ServerBase`
as the layer factory, so every connection, the echo logic unchanged, gets a TLS layer.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.connection import Connection, Phase
from pytest_multiconn.core.loop import EVENT_READ
from pytest_multiconn.servers.protocol import ProtocolConnection, ProtocolServer

if TYPE_CHECKING:
    import ssl

    from pytest_multiconn.tls.config import ServerTLS, TLSConfig

__all__ = ["EchoConnection", "EchoProtocol", "EchoServer"]

_OPEN = Phase.OPEN  # a module global: the inline path compares it once per event

# The inline path's two system calls.  On POSIX a socket is a file descriptor, and
# ``os.readv(fd, [view])`` / ``os.write(fd, view)`` are ``recv_into(view)`` / ``send(view)``
# without flags, with cheaper argument parsing (Argument Clinic instead of keyword and
# format-string parsing): about 600 fewer instructions per echoed message (callgrind, 1 KiB
# round trips on a socketpair, CPython 3.11).  Elsewhere (Windows: a socket is no descriptor)
# they are the socket's own methods, called on the socket.
_POSIX_IO = os.name == "posix" and hasattr(os, "readv")
_read_into: Callable[[Any, list[memoryview]], int]
_write: Callable[[Any, memoryview], int]
if _POSIX_IO:
    _read_into, _write = os.readv, os.write
else:  # pragma: no cover - not POSIX

    def _read_into(sock: Any, views: list[memoryview]) -> int:
        return int(sock.recv_into(views[0]))

    def _write(sock: Any, data: memoryview) -> int:
        return int(sock.send(data))


class EchoProtocol:
    """Writes back whatever it reads; stops reading while the peer is not reading.

    An asyncio-shaped handler (it runs unchanged under ``asyncio``'s ``create_server`` too).
    ``ProtocolServer(EchoProtocol)`` is an echo server; :class:`EchoServer` is the same
    server with a tuned plain path.
    """

    __slots__ = ("transport",)

    def __init__(self) -> None:
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool | None:
        return None  # close once everything read has been echoed (asyncio's default)

    def pause_writing(self) -> None:
        # The peer is not reading what we echo: stop reading from it, so its unread data
        # waits in its own send buffer rather than in our memory.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class EchoConnection(ProtocolConnection):
    """An :class:`EchoServer` connection on the general path (under TLS, with an observer;
    the base of the faulty echo connection): a
    :class:`~pytest_multiconn.servers.protocol.ProtocolConnection` driving the server's
    handler, an :class:`EchoProtocol`.  Subclass it and override ``data_received`` (with
    ``self.write``) for a server that answers differently."""

    def __init__(self, server: ProtocolServer, sock: socket.socket, addr: SocketAddress) -> None:
        super().__init__(server, sock, addr)
        self._observer = server.on_event


class _PlainEchoConnection(EchoConnection):
    """The echo connection of a plain ``EchoServer`` (no TLS, no observer, no faults), made
    by ``EchoServer.fast_connection``.

    Same behaviour as :class:`EchoConnection` driving :class:`EchoProtocol`; a readable event
    does recv, send and the bookkeeping inline, without the handler, because this path runs
    once per message in every benchmark and load test users point at us.  Anything unusual
    (buffered output, held output, a send cap, EOF, errors, a write event) falls back to the
    general methods, and through them to the handler.  It is never given a layer and
    overrides neither ``send_allowance`` nor ``after_send``, which is why the inline send may
    skip them.

    What it saves, counted with ``benchmarks/instructions.py`` (callgrind, per round trip):

    * a read into the loop thread's one read buffer (``_PlainEchoBuffer``) instead of ``recv``:
      no 64 KiB ``bytes`` allocated, shrunk and freed per message.  Whatever is not sent at
      once is copied into ``_out`` by ``write()`` before this returns, so nothing keeps a
      view of the shared buffer past the event;
    * on POSIX, ``os.readv`` / ``os.write`` on the descriptor instead of the socket's
      ``recv_into`` / ``send`` (see ``_POSIX_IO``);
    * the loop's ``poll_time`` (read once per poll batch) instead of ``time.monotonic()``;
    * a steady ping-pong is counted on the connection and written into the transcript's
      folded pair of entries only when the transcript is next recorded to or read
      (``Transcript.pending``), instead of six list updates and four tests per message.
    """

    def __init__(
        self, server: EchoServer, sock: socket.socket, addr: SocketAddress, buffer: _PlainEchoBuffer
    ) -> None:
        super().__init__(server, sock, addr)
        self._view = buffer.view  # the loop thread's one read buffer (_PlainEchoBuffer)
        self._views = buffer.views  # the same, as the list os.readv takes
        # What _read_into / _write act on: the descriptor on POSIX, else the socket.  The
        # inline path runs only while the phase is OPEN, so the descriptor is still ours.
        self._io: Any = self.fd if _POSIX_IO else sock
        # While a steady ping-pong folds into the transcript's last two entries (an "in" and
        # an "out" entry, ``_fold``), whole exchanges are only counted here and written into
        # those entries by ``_apply_fold``, which the transcript calls before any record or
        # read (``Transcript.pending``).  So a report always shows every exchange.
        self._fold: tuple[list[Any], list[Any]] | None = None
        self._fold_n = 0
        self._fold_bytes = 0
        self._fold_time = 0.0

    def leave_fast_path(self) -> None:
        """Become the general :class:`EchoConnection` (a fault joined this connection)."""
        self._apply_fold()
        self.__class__ = EchoConnection  # type: ignore[assignment]

    def _apply_fold(self) -> None:
        fold = self._fold
        self._fold = None
        self.transcript.pending = None
        if fold is not None and self._fold_n:
            pair, last = fold
            pair[1] = last[1] = self._fold_time
            pair[3] += self._fold_bytes
            pair[4] += self._fold_n
            last[3] += self._fold_bytes
            last[4] += self._fold_n
            self._fold_n = self._fold_bytes = 0

    # EchoProtocol's hooks, inline: this connection exists only for exactly that handler and
    # without an observer (EchoServer.fast_connection), so what the handler would do through
    # the transport is this, minus two calls per event.  The general methods that
    # handle_event falls back to (buffered output, a write event) land here, once per chunk
    # of a stream.  connection_made and connection_lost still reach the handler.
    def data_received(self, data: bytes) -> None:
        self.write(data)
        self.server.notify()

    def on_eof(self) -> None:
        self.finish()  # EchoProtocol.eof_received returns None: close once flushed

    def pause_writing(self) -> None:
        self.pause_reading()

    def resume_writing(self) -> None:
        self.resume_reading()

    def handle_event(self, mask: int) -> None:  # noqa: PLR0912 - one inline hot path
        if mask != EVENT_READ or self._phase is not _OPEN:
            super().handle_event(mask)
            return
        io = self._io
        view = self._view
        try:
            size = _read_into(io, self._views)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_failed(exc)
            return
        if not size:
            self.deliver_eof()
            return
        self.bytes_in += size
        self.last_received = now = self.loop.poll_time
        data = view[:size]
        # Sending at once needs the phase OPEN (checked above: the recv cannot change it).
        if self._out or self._output_held or self.max_send is not None:
            self.transcript.record("in", size, "", now)
            self.write(data)  # copies what it cannot send into _out
        else:
            try:
                sent = _write(io, data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.transcript.record("in", size, "", now)
                self._peer_failed(exc)
                return
            if sent == size and self._fold is not None:
                # The steady state: one whole exchange, counted (see __init__).
                self.bytes_out += size
                self.last_sent = now
                self._fold_n += 1
                self._fold_bytes += size
                self._fold_time = now
            else:
                transcript = self.transcript
                transcript.record("in", size, "", now)  # applies the counted ones first
                if sent:
                    self.bytes_out += sent
                    self.last_sent = now
                    transcript.record("out", sent, "", now)
                    if sent == size:
                        self._fold = transcript.folding_pair()
                        if self._fold is not None:
                            transcript.pending = self._apply_fold
                if sent < size:
                    self.write(data[sent:])
        self.server.notify()


class _PlainEchoBuffer:
    """The read buffer all plain echo connections served by one loop thread share.

    One per loop thread rather than per connection (10,000 idle connections must not hold
    640 MiB) or per server (a function-scoped server on the shared loop would zero 64 KiB
    for its first message, at every test).  Only the loop thread touches it, within one
    event: the inline path sends what it read before returning and copies what it could not
    send, so no view of it outlives the event, and nothing re-enters a handler meanwhile.
    """

    __slots__ = ("view", "views")

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size))
        self.views = [self.view]  # os.readv's argument, made once


# Each loop thread's _PlainEchoBuffer, made by its first plain echo connection; freed with
# the thread.
_loop_thread_buffers = threading.local()


def _loop_thread_buffer() -> _PlainEchoBuffer:
    """The calling loop thread's read buffer (``fast_connection`` runs in the loop thread)."""
    buffer: _PlainEchoBuffer | None = getattr(_loop_thread_buffers, "buffer", None)
    if buffer is None:
        buffer = _loop_thread_buffers.buffer = _PlainEchoBuffer(_PlainEchoConnection.read_size)
    return buffer


class EchoServer(ProtocolServer):
    """A non-blocking echo server on a background selector thread.

    A :class:`~pytest_multiconn.servers.ProtocolServer` whose protocol is
    :class:`EchoProtocol`, with the tuned plain path (see the module's docstring).  Binds
    ``127.0.0.1`` port 0 unless told otherwise, so the kernel picks a free port and there is
    no race between finding a port and binding it.  Use it as a context manager or call
    ``start()`` / ``stop()``; ``check()`` re-raises errors from the loop thread.
    """

    kind = "echo"
    connection_class = EchoConnection

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool | TLSConfig | ssl.SSLContext | ServerTLS | None = None,
        **kwargs: Any,
    ) -> None:
        #: This server's TLS when started with ``tls=`` True, a TLSConfig or an SSLContext.
        self.tls: ServerTLS | None
        super().__init__(EchoProtocol, host, port, tls=tls, **kwargs)

    def general_connection(self, conn: Connection) -> ProtocolConnection | None:
        # A plain echo connection that a fault joins leaves the inline path for good: it
        # writes its folded transcript out and becomes the general EchoConnection it is a
        # subclass of (same slots, same handler, which connection_made already reached), so
        # the inline path itself never tests for faults.
        if type(conn) is _PlainEchoConnection:
            conn.leave_fast_path()
        return super().general_connection(conn)

    def fast_connection(self, sock: socket.socket, addr: SocketAddress) -> Connection | None:
        # ProtocolServer asks only without a layer, an observer and a stream fault.  The
        # inline echo is EchoProtocol's behaviour, so only that exact factory gets it (not a
        # subclass, not a handler a subclass swapped in).
        if self.protocol_factory is EchoProtocol:
            return _PlainEchoConnection(self, sock, addr, _loop_thread_buffer())
        return None
