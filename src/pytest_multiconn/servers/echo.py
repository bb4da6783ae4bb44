"""The echo server: :class:`EchoServer`, its :class:`EchoConnection`, and the tuned plain path.

``EchoServer(tls=True | TLSConfig | SSLContext)`` serves TLS: it hands its
:class:`~pytest_multiconn.tls.config.ServerTLS` to :class:`~pytest_multiconn.core.server.ServerBase`
as the layer factory, so every connection, the echo logic unchanged, gets a TLS layer.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import EVENT_READ
from pytest_multiconn.core.server import ServerBase
from pytest_multiconn.tls.config import ServerTLS, TLSConfig, server_tls

__all__ = ["EchoConnection", "EchoServer"]


class EchoConnection(Connection):
    """Writes back whatever it reads; stops reading while the peer is not reading."""

    def __init__(self, server: ServerBase, sock: socket.socket, addr: Any) -> None:
        super().__init__(
            server.loop,
            sock,
            addr,
            high_water=server.high_water,
            low_water=server.low_water,
            transcript_limit=server.transcript_limit,
        )
        self.server = server
        self._observer = server.on_event

    def data_received(self, data: bytes) -> None:
        if self._observer is not None:
            self._observer("data", self, data)
        self.write(data)
        if self.server._waiters:
            self.server._notify()

    def pause_writing(self) -> None:
        # The peer is not reading what we echo: stop reading from it, so its unread data
        # waits in its own send buffer rather than in our memory.
        self.pause_reading()

    def resume_writing(self) -> None:
        self.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server._connection_closed(self)


class _PlainEchoConnection(EchoConnection):
    """The echo connection of a plain ``EchoServer`` (no TLS, no observer, no faults).

    Same behaviour as :class:`EchoConnection`; a readable event does recv, send and the
    bookkeeping inline, because this path runs once per message in every benchmark and load
    test users point at us.  Anything unusual (buffered output, held output, a send cap, EOF,
    errors, a write event) falls back to the general methods.  It is never given a layer and
    overrides neither ``send_allowance`` nor ``after_send``, which is why the inline send may
    skip them.

    What it saves, counted with ``benchmarks/instructions.py`` (callgrind, per round trip):

    * ``recv_into`` the server's one read buffer (``_PlainEchoBuffer``) instead of ``recv``:
      no 64 KiB ``bytes`` allocated, shrunk and freed per message.  Whatever is not sent at
      once is copied into ``_out`` by ``write()`` before this returns, so nothing keeps a
      view of the shared buffer past the event;
    * the loop's ``poll_time`` (read once per poll batch) instead of ``time.monotonic()``;
    * a steady ping-pong is counted on the connection and written into the transcript's
      folded pair of entries only when the transcript is next recorded to or read
      (``Transcript.pending``), instead of six list updates and four tests per message.
    """

    def __init__(self, server: EchoServer, sock: socket.socket, addr: Any) -> None:
        super().__init__(server, sock, addr)
        self._view = server._read_buffer.view
        # While a steady ping-pong folds into the transcript's last two entries (an "in" and
        # an "out" entry, ``_fold``), whole exchanges are only counted here and written into
        # those entries by ``_apply_fold``, which the transcript calls before any record or
        # read (``Transcript.pending``).  So a report always shows every exchange.
        self._fold: tuple[list[Any], list[Any]] | None = None
        self._fold_n = 0
        self._fold_bytes = 0
        self._fold_time = 0.0

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

    def handle_event(self, mask: int) -> None:  # noqa: PLR0912, PLR0915 - one inline hot path
        if mask != EVENT_READ or self._connecting:
            super().handle_event(mask)
            return
        sock = self.sock
        view = self._view
        try:
            size = sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_failed(exc)
            return
        if not size:
            self._eof_received = True
            self.transcript.record("eof-in")
            self._update_interest()
            self.on_eof()
            return
        self.bytes_in += size
        self.last_received = now = self.loop.poll_time
        data = view[:size]
        if (
            self._out
            or self._output_held
            or self.max_send is not None
            or self._eof_pending
            or self._eof_sent
            or self.closed
        ):
            self.transcript.record("in", size, "", now)
            self.write(data)  # copies what it cannot send into _out
        else:
            try:
                sent = sock.send(data)
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
                        self._fold = _folding_pair(transcript._entries)
                        if self._fold is not None:
                            transcript.pending = self._apply_fold
                if sent < size:
                    self.write(data[sent:])
        if self.server._waiters:
            self.server._notify()


def _folding_pair(entries: list[list[Any]]) -> tuple[list[Any], list[Any]] | None:
    """The last two entries when they are a plain "in" then a plain "out" (ping-pong)."""
    if len(entries) > 1:
        pair, last = entries[-2], entries[-1]
        if pair[2] == "in" and last[2] == "out" and not pair[5] and not last[5]:
            return pair, last
    return None


class _PlainEchoBuffer:
    """The read buffer all plain echo connections of one server share (its loop thread only).

    One per server rather than per connection: 10,000 idle connections must not hold 640 MiB.
    """

    __slots__ = ("view",)

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size))


class EchoServer(ServerBase):
    """A non-blocking echo server on a background selector thread.

    Binds ``127.0.0.1`` port 0 unless told otherwise, so the kernel picks a free port and
    there is no race between finding a port and binding it.  Use it as a context manager or
    call ``start()`` / ``stop()``; ``check()`` re-raises errors from the loop thread.
    """

    kind = "echo"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool | TLSConfig | ssl.SSLContext | ServerTLS | None = None,
        **kwargs: Any,
    ) -> None:
        #: This server's TLS when started with ``tls=`` True, a TLSConfig or an SSLContext.
        self.tls: ServerTLS | None = None
        if tls is not None and tls is not False:
            self.tls = server_tls(tls)
            kwargs["layer"] = self.tls
        super().__init__(host, port, **kwargs)
        self._read_buffer = _PlainEchoBuffer(_PlainEchoConnection.read_size)

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """A client SSLContext that trusts this server (None for plaintext, or when unknown)."""
        return self.tls.client_context if self.tls is not None else None

    def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
        # The tuned class only where nothing needs the general path: no layer, no observer.
        if self.layer_factory is None and self.on_event is None:
            return _PlainEchoConnection(self, sock, addr)
        return EchoConnection(self, sock, addr)
