"""A loopback address where nothing listens: the server "fault" of refusing connections."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any


class ClosedPort:
    """A loopback address where nothing listens, reserved until :meth:`close`.

    Connecting to it fails at once with ``ConnectionRefusedError`` (the kernel answers RST).
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Bound and never listening: the kernel refuses connections to it, and as long as this
        # socket holds the port no other socket can bind it (we do not set SO_REUSEADDR, and
        # Linux allows sharing a bound port only when both sockets set it) and outgoing
        # connects never pick it as their ephemeral port.  Closing a probe socket instead
        # would leave a port that anyone, a parallel test included, may take in the meantime.
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.bind((host, 0))
        except OSError:
            self._sock.close()
            raise
        self.address: tuple[Any, ...] = self._sock.getsockname()

    @property
    def host(self) -> str:
        return str(self.address[0])

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def closed(self) -> bool:
        return self._sock.fileno() == -1

    def close(self) -> None:
        """Release the port (idempotent)."""
        self._sock.close()

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " (released)" if self.closed else ""
        return f"<ClosedPort {self.host}:{self.port}{state}>"


@contextlib.contextmanager
def closed_port_address(host: str = "127.0.0.1") -> Iterator[tuple[Any, ...]]:
    """``with closed_port_address() as addr:`` a loopback address that refuses connections."""
    with ClosedPort(host) as port:
        yield port.address
