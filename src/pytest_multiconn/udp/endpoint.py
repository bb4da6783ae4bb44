"""One UDP socket on the selector loop: batched reads, sends with a bounded queue.

:class:`DatagramEndpoint` is the handler the loop keeps in ``SelectorKey.data`` for one
datagram socket (the echo server's socket, the proxy's client-facing socket, each proxy
session's socket to the target, each client socket).  The rules are the loop's rules for
streams, translated to datagrams:

* a readiness event reads at most :data:`READ_BATCH` datagrams with ``recvfrom``, so one
  flooded socket cannot starve the others sharing the loop;
* ``send`` calls ``sendto`` at once; only when the kernel says it would block is the datagram
  queued, and ``EVENT_WRITE`` is registered only while that queue is not empty;
* the queue is bounded (``max_queue`` datagrams): beyond it a datagram is dropped and
  counted, which is what a router does and what UDP senders must expect anyway.

Binding follows :mod:`pytest_multiconn.core.address`: loopback only unless
``allow_remote=True``, IPv4 or IPv6 (``::1``), port 0 for an ephemeral port.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from pytest_multiconn.core.address import check_host, family_for, parse_port
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Loop
from pytest_multiconn.errors import AddressError, AddressInUseError

#: Datagrams read per readiness event before the loop serves other sockets.
READ_BATCH = 64
#: Default bound on datagrams queued while the kernel's send buffer is full.
DEFAULT_MAX_QUEUE = 1024
#: The largest UDP payload (IPv4: 65535 - 8 - 20); reads ask for this much.
MAX_DATAGRAM = 65507

#: ``(data, address)`` for every datagram read.
Receiver = Callable[[bytes, Any], None]

# Errors a UDP socket reports for one datagram (an ICMP error for an earlier send, a
# datagram too large): they concern that datagram only; the socket stays usable.
_DATAGRAM_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EMSGSIZE, errno.EHOSTUNREACH, errno.ENETUNREACH,
     errno.ENOBUFS, errno.EPERM, errno.ECONNRESET}
)


class HasDatagramAddress(Protocol):
    """A started UDP server or proxy: what it is bound to."""

    @property
    def address(self) -> tuple[str, int]: ...


#: Where a UDP client sends and a UDP proxy forwards: ``(host, port)``, or a started UDP
#: server or proxy (its ``.address``).
UDPTarget: TypeAlias = tuple[str, int] | HasDatagramAddress


def address_of(host: str, port: object, *, allow_remote: bool, role: str) -> tuple[str, int]:
    """``(host, port)`` checked: loopback unless ``allow_remote``, a valid port."""
    return check_host(host, allow_remote=allow_remote, role=role), parse_port(port)


def bind_datagram(host: str, port: object = 0, *, allow_remote: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` (loopback unless opted in)."""
    host, number = address_of(host, port, allow_remote=allow_remote, role="bind")
    sock = socket.socket(family_for(host), socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, number))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(
                exc.errno, f"UDP {host}:{number} is already in use; use port 0 for an "
                "ephemeral one"
            ) from exc
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise AddressError(f"cannot bind UDP {host}:{number}: {exc.strerror}") from exc
        raise
    return sock


def connect_datagram(target: tuple[str, int]) -> socket.socket:
    """A non-blocking UDP socket connected to ``target`` (it then hears only the target)."""
    sock = socket.socket(family_for(target[0]), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


def local_address(sock: socket.socket) -> tuple[str, int]:
    """``(host, port)`` of a bound socket (IPv6's flow info and scope id left out)."""
    name = sock.getsockname()
    return str(name[0]), int(name[1])


class DatagramEndpoint:
    """The loop's handler for one UDP socket (loop thread only, after ``attach()``).

    ``on_datagram(data, address)`` is called for each datagram read.  ``send(data,
    address)`` sends at once or queues (``address`` None on a connected socket).
    """

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        on_datagram: Receiver,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        label: str = "udp",
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_datagram = on_datagram
        self.max_queue = max_queue
        self.label = label
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._events = 0
        self.closed = False
        self.datagrams_in = 0
        self.bytes_in = 0
        self.datagrams_out = 0
        self.bytes_out = 0
        #: Datagrams dropped because the send queue was full.
        self.dropped = 0
        #: Datagrams the kernel refused (ICMP errors reported on a later call, EMSGSIZE...).
        self.errors = 0
        self.peak_queued = 0
        #: Called (loop thread) when the send queue has drained: owners notify waiters.
        self.on_drain: Callable[[], None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.sock.fileno()}"
        return (f"<DatagramEndpoint {self.label} {state} in={self.datagrams_in} "
                f"out={self.datagrams_out} queued={len(self._queue)} dropped={self.dropped}>")

    @property
    def queued(self) -> int:
        return len(self._queue)

    def attach(self) -> None:
        """Register for reading."""
        self._set_events(EVENT_READ)

    def _set_events(self, events: int) -> None:
        if self.closed or events == self._events:
            return
        if self._events == 0:
            self.loop.register(self.sock, events, self)
        else:
            self.loop.modify(self.sock, events, self)
        self._events = events

    def handle_event(self, mask: int) -> None:
        if mask & EVENT_WRITE:
            self._flush()
        if mask & EVENT_READ:
            self._read()

    def _read(self) -> None:
        sock = self.sock
        for _ in range(READ_BATCH):
            if self.closed:
                return
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _DATAGRAM_ERRNOS:
                    self.errors += 1  # an ICMP error about an earlier send: that one only
                    continue
                raise
            self.datagrams_in += 1
            self.bytes_in += len(data)
            self.on_datagram(data, addr)

    def send(self, data: bytes, address: Any = None) -> bool:
        """Send one datagram now, or queue it; False if it was dropped (queue full, error)."""
        if self.closed:
            self.dropped += 1
            return False
        if self._queue:
            return self._enqueue(data, address)
        try:
            self._sendto(data, address)
        except (BlockingIOError, InterruptedError):
            return self._enqueue(data, address)
        except OSError as exc:
            if exc.errno in _DATAGRAM_ERRNOS:
                self.errors += 1
                return False
            raise
        return True

    def _sendto(self, data: bytes, address: Any) -> None:
        if address is None:
            self.sock.send(data)
        else:
            self.sock.sendto(data, address)
        self.datagrams_out += 1
        self.bytes_out += len(data)

    def _enqueue(self, data: bytes, address: Any) -> bool:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return False
        self._queue.append((data, address))
        self.peak_queued = max(self.peak_queued, len(self._queue))
        self._set_events(EVENT_READ | EVENT_WRITE)
        return True

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            data, address = queue[0]
            try:
                self._sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return  # still full: EVENT_WRITE stays registered
            except OSError as exc:
                if exc.errno not in _DATAGRAM_ERRNOS:
                    raise
                self.errors += 1
            queue.popleft()
        self._set_events(EVENT_READ)
        if self.on_drain is not None:
            self.on_drain()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.loop.unregister(self.sock)
            self._events = 0
        self.dropped += len(self._queue)
        self._queue.clear()
        self.sock.close()
