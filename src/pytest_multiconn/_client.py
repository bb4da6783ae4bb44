"""The tutorial's multi-connection client, done properly: :class:`MultiConnClient`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._address import check_host, parse_port
from ._connection import DEFAULT_HIGH_WATER, DEFAULT_TRANSCRIPT_LIMIT, Connection
from ._errors import MulticonnError
from ._loop import DEFAULT_TIMEOUT, Loop

#: The tutorial's two messages.
DEFAULT_MESSAGES: tuple[bytes, ...] = (b"Message 1 from client.", b"Message 2 from client.")

#: Observer signature: ``(event, connection number, data)``; event is "start", "send",
#: "recv" or "close".
ClientObserver = Callable[[str, int, "bytes | None"], None]


class EchoMismatch(MulticonnError, AssertionError):
    """Raised by :meth:`ClientResults.check` when a connection failed or its echo differed."""


@dataclass(frozen=True)
class ConnectionResult:
    """What one client connection sent, got back, and how it ended."""

    conn_id: int
    sent: int
    received: int
    expected: int
    matched: bool
    elapsed: float
    error: str | None
    transcript: str = ""
    first_mismatch: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.matched

    def __str__(self) -> str:
        status = "ok" if self.ok else f"FAILED: {self.error or 'echo differed'}"
        where = "" if self.first_mismatch is None else f" first difference at byte {self.first_mismatch}"
        return (
            f"connection {self.conn_id}: sent {self.sent}/{self.expected} B, received "
            f"{self.received} B in {self.elapsed * 1e3:.1f} ms, {status}{where}"
        )


class ClientResults(list[ConnectionResult]):
    """One :class:`ConnectionResult` per connection, in connection order."""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self)

    @property
    def failed(self) -> list[ConnectionResult]:
        return [r for r in self if not r.ok]

    def check(self) -> ClientResults:
        """Raise :class:`EchoMismatch` describing every failed connection; return self."""
        failed = self.failed
        if failed:
            lines = "\n".join(f"  {r}" + (f"\n{r.transcript}" if r.transcript else "") for r in failed[:10])
            more = f"\n  ... and {len(failed) - 10} more" if len(failed) > 10 else ""
            raise EchoMismatch(f"{len(failed)} of {len(self)} connections failed:\n{lines}{more}")
        return self


class ClientConnection(Connection):
    """Sends its messages, reads until it got that many bytes back, then closes."""

    def __init__(self, client: MultiConnClient, conn_id: int, sock: socket.socket) -> None:
        super().__init__(
            client.loop,
            sock,
            client.address,
            high_water=client.high_water,
            transcript_limit=client.transcript_limit,
            label=f"client-{conn_id}",
        )
        self.client = client
        self.conn_id = conn_id
        self.messages = client.messages
        self.expected = b"".join(self.messages)
        self.received = 0
        self.mismatch_at: int | None = None
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.failure: str | None = None
        self.done = False

    def connection_made(self) -> None:
        observer = self.client.on_event
        for message in self.messages:
            if observer is not None:
                observer("send", self.conn_id, message)
            self.write(message)
        if not self.expected:
            self._complete()

    def data_received(self, data: bytes) -> None:
        if self.client.on_event is not None:
            self.client.on_event("recv", self.conn_id, data)
        start = self.received
        self.received += len(data)
        if self.mismatch_at is None and self.expected[start : start + len(data)] != data:
            chunk = self.expected[start : start + len(data)]
            for i, (a, b) in enumerate(zip(chunk, data, strict=False)):
                if a != b:
                    self.mismatch_at = start + i
                    break
            else:
                self.mismatch_at = start + len(chunk)
        if self.received >= len(self.expected):
            self._complete()

    def _complete(self) -> None:
        if self.received > len(self.expected):
            self.failure = f"received {self.received - len(self.expected)} bytes more than sent"
        if self.client.on_event is not None:
            self.client.on_event("close", self.conn_id, None)
        self.close(reason="complete")

    def on_eof(self) -> None:
        self.failure = (
            f"server closed the connection after echoing {self.received} of "
            f"{len(self.expected)} bytes"
        )
        self.close(reason="eof before full echo")

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is not None and self.failure is None:
            self.failure = f"{type(exc).__name__}: {exc}"
        self.finished_at = time.monotonic()
        self.done = True
        self.client._pending -= 1

    def result(self) -> ConnectionResult:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        matched = self.mismatch_at is None and self.received == len(self.expected)
        return ConnectionResult(
            conn_id=self.conn_id,
            sent=self.bytes_out,
            received=self.received,
            expected=len(self.expected),
            matched=matched,
            elapsed=end - self.started,
            error=self.failure,
            transcript="" if matched and self.failure is None else self.transcript.format("    "),
            first_mismatch=self.mismatch_at,
        )


class MultiConnClient:
    """Open ``num_connections`` non-blocking connections; each sends ``messages`` and reads
    the echo back.  ``run()`` drives one selector in the calling thread, bounded by
    ``timeout``, and returns one :class:`ConnectionResult` per connection.

    It targets any ``(host, port)`` (or a Unix socket path), so it can be aimed at your own
    server; non-loopback hosts need ``allow_remote=True``.
    """

    def __init__(
        self,
        address: Any,
        num_connections: int = 2,
        messages: Iterable[bytes] = DEFAULT_MESSAGES,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        allow_remote: bool = False,
        high_water: int = DEFAULT_HIGH_WATER,
        transcript_limit: int = DEFAULT_TRANSCRIPT_LIMIT,
        on_event: ClientObserver | None = None,
    ) -> None:
        if isinstance(num_connections, bool) or not isinstance(num_connections, int) or num_connections < 1:
            raise ValueError(f"num_connections must be a positive integer, got {num_connections!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.address = _check_target(address, allow_remote=allow_remote)
        self.num_connections = num_connections
        self.messages: Sequence[bytes] = tuple(bytes(m) for m in messages)
        self.timeout = timeout
        self.high_water = high_water
        self.transcript_limit = transcript_limit
        self.on_event = on_event
        self.loop: Loop  # made by run(): it owns a socketpair, closed before run() returns
        self.connections: list[ClientConnection] = []
        self._pending = 0

    def __repr__(self) -> str:
        return (
            f"<MultiConnClient to {self.address!r} connections={self.num_connections} "
            f"pending={self._pending}>"
        )

    def _family(self) -> socket.AddressFamily:
        if isinstance(self.address, str):
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET

    def run(self) -> ClientResults:
        """Connect, exchange, close; never blocks longer than ``timeout``."""
        if self.connections:
            raise RuntimeError(f"{self!r} already ran; create a new client")
        deadline_started = time.monotonic()
        self.loop = Loop("multiconn-client")
        try:
            for conn_id in range(1, self.num_connections + 1):
                if self.on_event is not None:
                    self.on_event("start", conn_id, None)
                sock = socket.socket(self._family(), socket.SOCK_STREAM)
                conn = ClientConnection(self, conn_id, sock)
                self.connections.append(conn)
                self._pending += 1
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.connect(self.address)
            remaining = self.timeout - (time.monotonic() - deadline_started)
            self.loop.run_until(lambda: self._pending <= 0, max(remaining, 0.0))
            for conn in self.connections:
                if not conn.done:
                    conn.failure = (
                        f"timed out after {self.timeout}s: sent {conn.bytes_out}/"
                        f"{len(conn.expected)} B, received {conn.received} B"
                    )
                    conn.close(reason="client timeout")
            self.loop.check()
        finally:
            self.loop.close()
        return ClientResults(c.result() for c in self.connections)


def _check_target(address: Any, *, allow_remote: bool) -> Any:
    if isinstance(address, str):
        return address  # a Unix socket path
    try:
        host, port, *rest = address
    except (TypeError, ValueError):
        raise ValueError(f"address must be (host, port) or a Unix socket path, got {address!r}") from None
    host = check_host(host, allow_remote=allow_remote, role="connect to")
    return (host, parse_port(port), *rest)


def run_clients(address: Any, num_connections: int = 2, **kwargs: Any) -> ClientResults:
    """Shorthand for ``MultiConnClient(address, num_connections, **kwargs).run()``."""
    return MultiConnClient(address, num_connections, **kwargs).run()
