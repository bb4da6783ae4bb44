"""One row's stage: the fault proxy (with its taps) in front of the server, and what the
taps saw, read back as requests, replies and a transcript.

A :class:`Scene` is made for one row and stopped after it, so every row starts from fresh
connections (a new address, too: a client cached per address is a new client per row).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.exchanges import Exchange
from pytest_multiconn.proxy import FaultProxy, Toxic
from pytest_multiconn.suite.client.framing import request_key, split_replies, split_requests
from pytest_multiconn.suite.client.toxics import Recorder, Tap

#: Lines of the wire transcript kept per row (the proxy's own report follows them).
TRANSCRIPT_LINES = 40
#: Bytes of each chunk shown in the transcript.
EXCERPT = 48
#: Bound on every wait of the suite's own (not the client's) for the proxy.
PROXY_WAIT = 10.0


@dataclass(frozen=True)
class Wire:
    """What the taps saw: requests per connection (complete ones, framed), the streams, and
    how many times the request of interest reached the server."""

    upstream: dict[int, bytes]
    downstream: dict[int, bytes]
    requests: dict[int, list[bytes]]
    connections: int
    transcript: tuple[str, ...]
    size: int  # bytes, both directions

    def count(self, exchange: Exchange, key: bytes | None) -> int:
        """How many requests whose key is ``key`` reached the server (None: the last
        request of each connection stands for it)."""
        if key is None:
            return sum(1 for reqs in self.requests.values() if reqs)
        return sum(1 for reqs in self.requests.values() for r in reqs
                   if request_key(exchange, r) == key)


@dataclass(frozen=True)
class Calibration:
    """What the baseline showed: where the reply of interest sits in its connection's
    downstream stream (``offset``, ``length``) and what its request is (``key``)."""

    offset: int = 0
    length: int = 0
    key: bytes | None = None
    request: bytes = b""
    handshake: int = 0  # requests before the one of interest on the connection
    found: bool = False

    @property
    def half(self) -> int:
        """Bytes of the reply that pass before a mid-reply fault (at least one)."""
        return max(1, self.length // 2)


def calibrate(exchange: Exchange, wire: Wire) -> Calibration:
    """The reply and request of interest: the last complete ones on the first connection
    that had any."""
    for conn in sorted(wire.requests):
        reqs = wire.requests[conn]
        if not reqs:
            continue
        request = reqs[-1]
        replies = split_replies(exchange, wire.downstream.get(conn, b""), request)
        if not replies:
            return Calibration(key=request_key(exchange, request), request=request,
                               handshake=len(reqs) - 1)
        offset, length = replies[-1]
        return Calibration(offset, length, request_key(exchange, request), request,
                           len(reqs) - 1, True)
    return Calibration()


@dataclass
class Scene:
    """The proxy in front of ``upstream`` with ``faults`` ((toxic, direction) pairs, in
    order) and a tap last on each direction."""

    exchange: Exchange
    upstream: Any
    faults: Sequence[tuple[Toxic, str]] = ()
    seed: int = 0
    row: str = ""
    recorder: Recorder = field(default_factory=Recorder)
    proxy: FaultProxy | None = None

    def start(self) -> Any:
        proxy = FaultProxy(self.upstream, seed=derive_seed(self.seed, "client-suite", self.row),
                           timeout=PROXY_WAIT)
        for toxic, direction in self.faults:
            proxy.add(toxic, direction)  # type: ignore[arg-type]
        proxy.add(Tap(recorder=self.recorder, direction="upstream"), "upstream", name="tap_up")
        proxy.add(Tap(recorder=self.recorder, direction="downstream"), "downstream",
                  name="tap_down")
        proxy.start()
        self.proxy = proxy
        return proxy.address

    @property
    def address(self) -> Any:
        return self._proxy().address

    def _proxy(self) -> FaultProxy:
        if self.proxy is None:
            raise RuntimeError("the scene is not started")
        return self.proxy

    def live(self) -> int:
        """Connections open at the proxy now."""
        return 0 if self.proxy is None else len(self.proxy.handles())

    def close_connections(self) -> int:
        """Close every live connection (both sides, after what they already have to send),
        as a server that closes a kept-alive connection does; wait (bounded) until closed."""
        handles = self._proxy().handles()
        for handle in handles:
            handle.close()
        for handle in handles:
            handle.wait_closed(PROXY_WAIT)
        return len(handles)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()

    def wire(self) -> Wire:
        streams, events = self.recorder.snapshot()
        up = {c: d for (c, direction), d in streams.items() if direction == "upstream"}
        down = {c: d for (c, direction), d in streams.items() if direction == "downstream"}
        requests = {c: split_requests(self.exchange, d)[0] for c, d in up.items()}
        lines = [_event_line(e) for e in events]
        if len(lines) > TRANSCRIPT_LINES:
            dropped = len(lines) - TRANSCRIPT_LINES
            lines = [*lines[: TRANSCRIPT_LINES // 2], f"... {dropped} entries left out ...",
                     *lines[-TRANSCRIPT_LINES // 2 :]]
        if self.proxy is not None:
            lines.extend(self.proxy.report(limit=6).splitlines())
        total = sum(len(d) for d in streams.values())
        connections = self.proxy.connections_seen if self.proxy is not None else 0
        return Wire(up, down, requests, max(connections, self.recorder.connections),
                    tuple(lines), total)


def _event_line(event: tuple[float, int, str, bytes | None]) -> str:
    t, conn, direction, data = event
    arrow = "client -> server" if direction == "upstream" else "server -> client"
    if data is None:
        return f"{t * 1e3:9.1f}ms #{conn} {arrow} end-of-stream"
    shown = repr(data[:EXCERPT]) + ("..." if len(data) > EXCERPT else "")
    return f"{t * 1e3:9.1f}ms #{conn} {arrow} {len(data):>6} B {shown}"


def closed_port() -> tuple[str, int]:
    """A loopback address where nothing listens (bound, then released without listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return ("127.0.0.1", int(s.getsockname()[1]))


def monotonic() -> float:
    return time.monotonic()


__all__ = ["Calibration", "Scene", "Wire", "calibrate", "closed_port"]
