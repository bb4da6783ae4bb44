"""The suite's clients: blocking sockets (plain or TLS) that speak an exchange.

Every call is bounded by a deadline; nothing here sleeps to synchronise.  The pacing of
partial sends and slow reads is part of the fault, not a wait for something.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.exchanges.base import Exchange, ReplyReader

#: A connect slower than this waited for a SYN retransmission (the first comes after 1 s).
SYN_RETRY = 0.9


class PeerError(Exception):
    """A suite client could not finish: the message says what it saw."""


def open_socket(address: SocketAddress, tls: ssl.SSLContext | None, timeout: float,
                rcvbuf: int | None = None) -> socket.socket:
    """A connected blocking socket (TLS-wrapped, handshake done, when ``tls`` is given)."""
    family = socket.AF_UNIX if isinstance(address, str) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(address if isinstance(address, str) else tuple(address[:2]))
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=str(address[0]))
    except BaseException:
        sock.close()
        raise
    return sock


def read_replies(sock: socket.socket, reader: ReplyReader, deadline: float,
                 *, rate: float | None = None, stop_after: int | None = None) -> None:
    """Read until ``reader`` has every reply (or ``stop_after`` of them), the server closes,
    or ``deadline``; ``rate`` (bytes/s) reads slowly, in small pieces."""
    want = len(reader.requests) if stop_after is None else stop_after
    started = time.monotonic()
    got = 0
    while len(reader.outcomes) < want and reader.closed_after is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerError(_timeout_text(reader))
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096 if rate else 65536)
        except TimeoutError:
            raise PeerError(_timeout_text(reader)) from None
        except OSError as exc:
            reader.eof()
            raise PeerError(f"{type(exc).__name__} after {reader.received} B: "
                            f"{reader.first_problem() or exc}") from None
        if not chunk:
            reader.eof()
            return
        reader.feed(chunk)
        got += len(chunk)
        if rate:
            # Pacing, part of the fault: read no faster than ``rate``.
            ahead = got / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(min(ahead, max(deadline - time.monotonic(), 0)))


def _timeout_text(reader: ReplyReader) -> str:
    done = len(reader.outcomes)
    return (f"no complete reply {done} within the time limit (got {done} of "
            f"{len(reader.requests)} replies, {len(reader.buffer)} B of the next)")


def send_paced(sock: socket.socket, data: bytes, rng: random.Random, max_chunk: int,
               max_pause: float) -> list[int]:
    """Send ``data`` in random chunks of 1..``max_chunk`` bytes, pausing up to ``max_pause``
    seconds between them; returns the chunk sizes."""
    sizes = []
    view = memoryview(data)
    while view:
        n = rng.randint(1, max_chunk)
        sock.sendall(view[:n])
        sizes.append(min(n, len(view)))
        view = view[n:]
        if max_pause and view:
            time.sleep(rng.uniform(0, max_pause))
    return sizes


@dataclass
class Talk:
    """One connection's requests, sent ``how`` ("serial", "pipelined" or "split"), replies
    judged by a :class:`ReplyReader`."""

    reader: ReplyReader
    error: str | None = None
    keeps_open: bool = True

    @property
    def problem(self) -> str | None:
        if self.error is not None:
            return self.error
        return self.reader.first_problem()


def talk(address: SocketAddress, tls: ssl.SSLContext | None, exchange: Exchange,
         requests: Sequence[bytes], deadline: float, *, how: str = "serial",
         rng: random.Random | None = None, max_chunk: int = 1, max_pause: float = 0.0,
         rcvbuf: int | None = None, rate: float | None = None) -> Talk:
    """Connect, send ``requests`` ``how`` asked, read every reply, close."""
    reader = ReplyReader(exchange, requests)
    result = Talk(reader)
    try:
        with open_socket(address, tls, max(deadline - time.monotonic(), 0.01), rcvbuf) as sock:
            if how == "pipelined":
                sock.sendall(b"".join(requests))
                read_replies(sock, reader, deadline, rate=rate)
            else:
                for i, request in enumerate(requests):
                    if how == "split":
                        send_paced(sock, request, rng or random.Random(0), max_chunk, max_pause)
                    else:
                        sock.sendall(request)
                    read_replies(sock, reader, deadline, stop_after=i + 1, rate=rate)
                    if reader.closed_after is not None:
                        # The server ends the connection after this reply (HTTP/1.0, say):
                        # the requests after it were never sent, so they expect nothing.
                        del reader.requests[reader.closed_after + 1 :]
                        break
                    if len(reader.outcomes) <= i:
                        break
            result.keeps_open = reader.closed_after is None
            if reader.complete and not reader.closed_after:
                _drain_extra(sock, reader)
    except PeerError as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _drain_extra(sock: socket.socket, reader: ReplyReader) -> None:
    # Bytes already here beyond the last reply are an error of the server; do not wait.
    sock.setblocking(False)
    with contextlib.suppress(OSError, ssl.SSLError):
        extra = sock.recv(65536)
        if extra:
            reader.feed(extra)


def rst_close(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


@dataclass
class BurstResult:
    """What a burst saw: connections made, served (a right reply), why the others failed,
    connects that waited for a SYN retry, the most connections open and waiting for their
    reply at one time, and the seconds until the last one was served."""

    connected: int
    served: int
    failed: list[str]
    slow_connects: int
    most_open: int = 0
    seconds: float = 0.0


def burst(  # noqa: PLR0912, PLR0915 - one selector loop over the burst
    address: SocketAddress, exchange: Exchange, n: int, rng: random.Random, timeout: float
          ) -> BurstResult:
    """Open ``n`` non-blocking connections at once, send each one request, read its reply
    (plaintext only: a burst measures the listener, not TLS)."""
    sel = selectors.DefaultSelector()
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    states: list[dict[str, Any]] = []
    start = time.monotonic()
    deadline = start + timeout
    try:
        for i in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            (request,) = exchange.requests(1, random.Random(rng.random() + i))
            state = {"sock": sock, "reader": ReplyReader(exchange, [request]),
                     "out": request, "connected": None, "error": None, "done": False}
            err = sock.connect_ex(tuple(address[:2]))
            if err not in (0, 115, 11):  # EINPROGRESS, EAGAIN
                state["error"], state["done"] = f"connect failed: errno {err}", True
                sock.close()
            else:
                sel.register(sock, selectors.EVENT_WRITE, state)
            states.append(state)
        pending = sum(not s["done"] for s in states)
        most_open = 0
        last_served = 0.0
        while pending and time.monotonic() < deadline:
            most_open = max(most_open, pending)
            for key, mask in sel.select(max(deadline - time.monotonic(), 0)):
                st = key.data
                sock = st["sock"]
                if mask & selectors.EVENT_WRITE:
                    if st["connected"] is None:
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            st["error"], st["done"] = f"connect failed: errno {err}", True
                            sel.unregister(sock)
                            pending -= 1
                            continue
                        st["connected"] = time.monotonic() - start
                    try:
                        sent = sock.send(st["out"])
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        st["error"], st["done"] = f"{type(exc).__name__}: {exc}", True
                        sel.unregister(sock)
                        pending -= 1
                        continue
                    st["out"] = st["out"][sent:]
                    if not st["out"]:
                        sel.modify(sock, selectors.EVENT_READ, st)
                else:
                    try:
                        chunk = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        chunk, st["error"] = b"", f"{type(exc).__name__}: {exc}"
                    reader: ReplyReader = st["reader"]
                    if chunk:
                        reader.feed(chunk)
                    else:
                        reader.eof()
                    if reader.complete or not chunk:
                        # Done: close at once, as a real client does after its reply (a
                        # server may wait for the close before it takes the next one).
                        st["done"] = True
                        sel.unregister(sock)
                        sock.close()
                        pending -= 1
                        last_served = time.monotonic() - start
    finally:
        for st in states:
            st["sock"].close()
        sel.close()
    served = 0
    failed = []
    for i, st in enumerate(states):
        reader = st["reader"]
        if st["done"] and reader.ok and st["error"] is None:
            served += 1
        elif not st["done"]:
            failed.append(f"connection {i}: " + (
                "never connected" if st["connected"] is None else "no reply") +
                f" within {timeout:.1f}s")
        else:
            failed.append(f"connection {i}: {st['error'] or reader.first_problem()}")
    slow = sum(1 for st in states if st["connected"] is not None and st["connected"] > SYN_RETRY)
    connected = sum(1 for st in states if st["connected"] is not None)
    return BurstResult(connected, served, failed, slow, most_open, last_served)
