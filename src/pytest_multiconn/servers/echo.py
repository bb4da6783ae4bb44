"""The echo server: :class:`EchoServer`, its :class:`EchoConnection`, and the tuned plain path.

``EchoServer(tls=True | TLSConfig | SSLContext)`` serves TLS: it hands its
:class:`~pytest_multiconn.tls.config.ServerTLS` to :class:`~pytest_multiconn.core.server.ServerBase`
as the layer factory, so every connection, the echo logic unchanged, gets a TLS layer.
"""

from __future__ import annotations

import socket
import ssl
import time
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
    """

    def handle_event(self, mask: int) -> None:  # noqa: PLR0912, PLR0915 - one inline hot path
        if mask != EVENT_READ or self._connecting:
            super().handle_event(mask)
            return
        sock = self.sock
        try:
            data = sock.recv(self.read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_failed(exc)
            return
        if not data:
            self._eof_received = True
            self.transcript.record("eof-in")
            self._update_interest()
            self.on_eof()
            return
        size = len(data)
        self.bytes_in += size
        self.last_received = now = time.monotonic()
        # Steady ping-pong: the transcript ends with a plain "in" entry and a plain "out"
        # entry, and this exchange folds into them (what Transcript.record would do, inline).
        entries = self.transcript._entries
        folding = False
        if len(entries) > 1:
            pair, last = entries[-2], entries[-1]
            folding = pair[2] == "in" and last[2] == "out" and not pair[5] and not last[5]
        if folding:
            pair[1] = now
            pair[3] += size
            pair[4] += 1
        else:
            self.transcript.record("in", size, "", now)
        if (
            self._out
            or self._output_held
            or self.max_send is not None
            or self._eof_pending
            or self._eof_sent
            or self.closed
        ):
            self.write(data)
        else:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._peer_failed(exc)
                return
            if sent:
                self.bytes_out += sent
                self.last_sent = now
                if folding:
                    last[1] = now
                    last[3] += sent
                    last[4] += 1
                else:
                    self.transcript.record("out", sent, "", now)
            if sent < size:
                self.write(memoryview(data)[sent:])
        if self.server._waiters:
            self.server._notify()


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

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """A client SSLContext that trusts this server (None for plaintext, or when unknown)."""
        return self.tls.client_context if self.tls is not None else None

    def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
        # The tuned class only where nothing needs the general path: no layer, no observer.
        if self.layer_factory is None and self.on_event is None:
            return _PlainEchoConnection(self, sock, addr)
        return EchoConnection(self, sock, addr)
