"""Socket helpers shared by every test file: blocking clients, bounded reads, raw TLS clients.

Every read here is bounded twice: by time (``timeout``, ``WAIT`` unless told, one deadline for
the whole read, not one per ``recv()``) and by size (``n`` or ``limit``).  When a bound is hit
the helper fails with an ``AssertionError`` that says what it expected and what arrived.
Nothing here sleeps.  Import them as ``from helpers import connect, recv_exactly``
(``tests/`` is on ``sys.path``: pytest's rootdir-relative import of conftest.py puts it there).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pytest_multiconn.lowlevel import Connection, Loop

#: Bound, in seconds, on every blocking socket call and every wait in these tests.
WAIT = 10.0
#: Default size bound of the reads that run to an end (EOF, a marker).
LIMIT = 1 << 26

#: Errors that end a stream without EOF: a reset, a timeout, a TLS stream cut without
#: close_notify.  ``recv_to_end`` returns them; the other readers let them through.
STREAM_ERRORS = (ConnectionError, TimeoutError, ssl.SSLEOFError)


class Readable(Protocol):
    """What the readers need: a socket, or a :class:`RawTLSClient` / :class:`RawPlainClient`."""

    def recv(self, n: int, /) -> bytes: ...
    def gettimeout(self) -> float | None: ...
    def settimeout(self, timeout: float | None, /) -> None: ...


def _preview(data: bytes | bytearray, width: int = 40) -> str:
    """``data`` short enough for a failure message: its length, its head and its tail."""
    if len(data) <= 2 * width:
        return f"{len(data)} bytes {bytes(data)!r}"
    return f"{len(data)} bytes {bytes(data[:width])!r}...{bytes(data[-width:])!r}"


@contextlib.contextmanager
def _deadline(sock: Readable, timeout: float) -> Iterator[Callable[[], None]]:
    """Yield ``arm()``: it gives the next ``recv()`` what is left of ``timeout`` (TimeoutError
    once it is spent), or the socket's own timeout when that is shorter (a test that set one
    wants its ``TimeoutError`` that soon); the socket's own timeout is restored on the way out."""
    before = sock.gettimeout()
    own = before if before else None  # None (blocking) and 0.0 (non-blocking) bound nothing
    end = time.monotonic() + timeout

    def arm() -> None:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{timeout}s spent")
        sock.settimeout(left if own is None else min(left, own))

    try:
        yield arm
    finally:
        sock.settimeout(before)


def connect(
    address: Any,
    *,
    timeout: float = WAIT,
    nodelay: bool = True,
    rcvbuf: int | None = None,
    sndbuf: int | None = None,
) -> socket.socket:
    """A blocking client socket connected to ``address`` (a (host, port) tuple, IPv4 or IPv6,
    or a Unix socket path), every call on it bounded by ``timeout``.

    ``nodelay`` (TCP only) turns Nagle off, so each ``sendall`` leaves at once.  ``rcvbuf`` and
    ``sndbuf`` are set before ``connect()``, as a small window must be: the kernel fixes the
    window scale in the handshake.
    """
    if isinstance(address, str):
        family = socket.AF_UNIX
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        address = tuple(address[:2])
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.settimeout(timeout)
        sock.connect(address)
        if nodelay and family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(
    sock: Readable, n: int, *, timeout: float = WAIT, sizes: list[int] | None = None
) -> bytes:
    """Read exactly ``n`` bytes within ``timeout``; fail on EOF or on the deadline, saying how
    much arrived.  ``sizes``, when given, gets the length of every ``recv()`` result (over TLS:
    the plaintext of one record each)."""
    got = bytearray()
    with _deadline(sock, timeout) as arm:
        while len(got) < n:
            try:
                arm()
                chunk = sock.recv(min(1 << 20, n - len(got)))
            except TimeoutError:
                raise AssertionError(
                    f"expected {n} bytes within {timeout}s, got {_preview(got)}"
                ) from None
            if not chunk:
                raise AssertionError(f"expected {n} bytes, got EOF after {_preview(got)}")
            if sizes is not None:
                sizes.append(len(chunk))
            got += chunk
    return bytes(got)


def recv_until(
    sock: Readable, marker: bytes, *, limit: int = LIMIT, timeout: float = WAIT
) -> bytes:
    """Read until what arrived contains ``marker``; return all of it (the marker may not be
    last if more came in the same ``recv()``).  Fails on EOF, past ``limit`` bytes or on the
    deadline, saying what arrived."""
    got = bytearray()
    with _deadline(sock, timeout) as arm:
        while marker not in got[-(len(marker) + (1 << 16)) :]:
            if len(got) > limit:
                raise AssertionError(f"no {marker!r} in the first {_preview(got)}")
            try:
                arm()
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                raise AssertionError(
                    f"no {marker!r} within {timeout}s; got {_preview(got)}"
                ) from None
            if not chunk:
                raise AssertionError(f"EOF before {marker!r}; got {_preview(got)}")
            got += chunk
    return bytes(got)


def recv_until_eof(sock: Readable, *, limit: int = LIMIT, timeout: float = WAIT) -> bytes:
    """Read until EOF; fail past ``limit`` bytes or on the deadline, saying what arrived.
    A reset raises ``ConnectionResetError`` as ``recv()`` does."""
    got = bytearray()
    with _deadline(sock, timeout) as arm:
        while len(got) <= limit:
            try:
                arm()
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                raise AssertionError(
                    f"no EOF within {timeout}s; got {_preview(got)}"
                ) from None
            if not chunk:
                return bytes(got)
            got += chunk
    raise AssertionError(f"no EOF after {limit} bytes; got {_preview(got)}")


def recv_to_end(
    sock: Readable, *, limit: int = 1 << 20, timeout: float = WAIT
) -> tuple[bytes, BaseException | None]:
    """Read until EOF or a stream error (:data:`STREAM_ERRORS`: a reset, a TLS cut, the
    deadline as ``TimeoutError``); return the bytes and the error, None for a clean EOF."""
    got = bytearray()
    with _deadline(sock, timeout) as arm:
        while len(got) <= limit:
            try:
                arm()
                chunk = sock.recv(1 << 16)
            except STREAM_ERRORS as exc:
                return bytes(got), exc
            if not chunk:
                return bytes(got), None
            got += chunk
    raise AssertionError(f"no end after {limit} bytes; got {_preview(got)}")


def abort(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets: (ours, the peer's); the peer blocks up to WAIT."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=WAIT)
        peer, _ = listener.accept()
    peer.settimeout(WAIT)
    return ours, peer


class RawTarget:
    """A listening socket the test accepts from itself, to see exactly what a proxy sends."""

    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(WAIT)
        self.address = self.sock.getsockname()[:2]
        self.accepted: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(WAIT)
        self.accepted.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@contextlib.contextmanager
def raw_target(family: socket.AddressFamily = socket.AF_INET) -> Iterator[RawTarget]:
    target = RawTarget(family)
    try:
        yield target
    finally:
        target.close()


class RawTLSClient:
    """A blocking TLS client: an ``ssl.SSLObject`` over a plain socket.

    Unlike ``wrap_socket`` it lets the socket's own errors through as they are (an RST is
    ``ConnectionResetError``, not an ``SSLEOFError``), and ``recv()`` returns one TLS record at
    most (``SSL_read``), so record sizes are what a test sees.  A TCP FIN without
    ``close_notify`` raises ``ssl.SSLEOFError``; a clean end of the TLS stream reads ``b""``.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self._in, self._out, server_hostname="127.0.0.1")

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)  # ConnectionResetError and TimeoutError come from here
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def do_handshake(self) -> None:
        for _ in range(1000):
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            else:
                self._flush()
                return
        raise AssertionError("TLS handshake did not finish in 1000 reads")

    def sendall(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def recv(self, n: int) -> bytes:
        for _ in range(10_000):
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()  # a post-handshake message may want an answer
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""  # close_notify
        raise AssertionError("no TLS record in 10000 reads")

    def send_until_blocked(self, block: bytes, limit: int) -> int:
        """Encrypt and send ``block`` repeatedly without blocking; the plaintext bytes sent."""
        self.sock.setblocking(False)
        sent = 0
        pending = b""
        while sent < limit:
            if not pending:
                self.obj.write(block)
                pending = self._out.read()
            try:
                n = self.sock.send(pending)
            except BlockingIOError:
                return sent
            pending = pending[n:]
            if not pending:
                sent += len(block)
        raise AssertionError(f"sends never blocked after {sent} bytes")

    def close(self) -> None:
        self.sock.close()


class RawPlainClient:
    """The plaintext twin of :class:`RawTLSClient` (the same methods on a plain socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)

    def send_until_blocked(self, block: bytes, limit: int) -> int:
        self.sock.setblocking(False)
        sent = 0
        while sent < limit:
            try:
                sent += self.sock.send(block)
            except BlockingIOError:
                return sent
        raise AssertionError(f"sends never blocked after {sent} bytes")

    def close(self) -> None:
        self.sock.close()


Raw = RawTLSClient | RawPlainClient


class Recorder(Connection):
    """A connection that records its hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []
        self.received = bytearray()

    def connection_made(self) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def drive(loop: Loop, predicate: Callable[[], bool], what: str) -> None:
    """Run a caller-driven loop until ``predicate()``; fail naming ``what`` after WAIT."""
    assert loop.run_until(predicate, WAIT), f"timed out after {WAIT}s waiting for {what}"
