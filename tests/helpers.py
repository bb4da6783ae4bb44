"""Socket helpers shared by the tests of the loop, connections and servers.

Every blocking call is bounded by ``WAIT``; nothing here sleeps.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from pytest_multiconn.lowlevel import Connection, Loop

#: Bound, in seconds, on every blocking socket call and every wait in these tests.
WAIT = 10.0


def connect(address: tuple[str, int] | str, *, timeout: float = WAIT) -> socket.socket:
    """A blocking client socket connected to ``address`` (TCP, IPv6 or a Unix path)."""
    if isinstance(address, str):
        family = socket.AF_UNIX
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(min(1 << 20, n - len(chunks)))
        if not data:
            raise AssertionError(f"EOF after {len(chunks)} of {n} bytes")
        chunks += data
    return bytes(chunks)


def recv_until_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    chunks = bytearray()
    while len(chunks) <= limit:
        data = sock.recv(1 << 20)
        if not data:
            return bytes(chunks)
        chunks += data
    raise AssertionError(f"no EOF after {limit} bytes")


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


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
