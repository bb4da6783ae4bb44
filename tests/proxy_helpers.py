"""Helpers shared by the proxy tests: a target the test drives by hand, and bounded reads."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

TIMEOUT = 5.0  # bound on every blocking socket call in the proxy tests


class RawTarget:
    """A listening socket the test accepts from itself, to see exactly what the proxy sends."""

    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(TIMEOUT)
        self.address = self.sock.getsockname()[:2]
        self.accepted: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(TIMEOUT)
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


def connect(address: object) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)  # type: ignore[arg-type]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    buf = bytearray()
    while len(buf) <= limit:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk
    raise AssertionError(f"no EOF after {limit} bytes")


def abort(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER on, zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def timed(fn: object) -> tuple[object, float]:
    start = time.monotonic()
    result = fn()  # type: ignore[operator]
    return result, time.monotonic() - start
