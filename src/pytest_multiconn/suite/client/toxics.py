"""The client suite's own toxics, beside the proxy's: a tap that records every byte, a
wrapper that acts on the first connections only, and a reply replaced by garbage.

They are ordinary :class:`~pytest_multiconn.proxy.Toxic` subclasses (not registered: they
are the suite's instruments, not faults a user picks by name).  The tap goes last on each
direction, so it sees what really reached the server (upstream) and the client (downstream).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from random import Random
from typing import Any

from pytest_multiconn.exchanges import Exchange
from pytest_multiconn.faults.toxics import NotApplied
from pytest_multiconn.proxy import PipeAPI, Stage, Toxic
from pytest_multiconn.suite.client.framing import request_key, split_replies, split_requests

#: One tap event: (seconds since the scene began, connection, direction, bytes or None: EOF).
Event = tuple[float, int, str, "bytes | None"]


@dataclass
class Stream:
    """One direction of one proxied connection, as the tap saw it."""

    connection: int
    direction: str
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False
    first_at: float | None = None


class Recorder:
    """Every byte the taps passed, per connection and direction, with times (thread-safe:
    the proxy's loop thread writes, the suite reads)."""

    def __init__(self, exchange: Exchange | None = None, key: bytes | None = None) -> None:
        #: What makes the request of interest (its :func:`request_key`), to find it upstream.
        self.exchange = exchange
        self.key = key
        #: Per connection: the index of the first request of interest among its requests.
        self.interest: dict[int, int] = {}
        self.origin = time.monotonic()
        self._lock = threading.Lock()
        self._numbers: dict[int, int] = {}
        self._keep: list[object] = []  # keeps the keys alive, so ids stay unique
        self.streams: dict[tuple[int, str], Stream] = {}
        self.events: list[Event] = []

    def _number(self, key: object) -> int:
        n = self._numbers.get(id(key))
        if n is None:
            n = self._numbers[id(key)] = len(self._numbers) + 1
            self._keep.append(key)
        return n

    def open(self, key: object, direction: str) -> Stream:
        with self._lock:
            n = self._number(key)
            return self.streams.setdefault((n, direction), Stream(n, direction))

    def data(self, stream: Stream, data: bytes) -> None:
        now = time.monotonic() - self.origin
        with self._lock:
            if stream.first_at is None:
                stream.first_at = now
            stream.data += data
            self.events.append((now, stream.connection, stream.direction, bytes(data)))
            if (stream.direction == "upstream" and self.exchange is not None
                    and self.key is not None and stream.connection not in self.interest):
                requests, _ = split_requests(self.exchange, bytes(stream.data))
                for index, request in enumerate(requests):
                    if request_key(self.exchange, request) == self.key:
                        self.interest[stream.connection] = index
                        break

    def interest_of(self, connection: int) -> int | None:
        """The index of the request of interest on ``connection`` (None: not sent yet)."""
        with self._lock:
            return self.interest.get(connection)

    def number(self, key: object) -> int:
        with self._lock:
            return self._number(key)

    def eof(self, stream: Stream) -> None:
        now = time.monotonic() - self.origin
        with self._lock:
            stream.eof = True
            self.events.append((now, stream.connection, stream.direction, None))

    def snapshot(self) -> tuple[dict[tuple[int, str], bytes], list[Event]]:
        with self._lock:
            return ({k: bytes(s.data) for k, s in self.streams.items()}, list(self.events))

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._numbers)


class _TapStage(Stage):
    toxic: Tap

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        # The proxy's pipe knows its connection (``pair``); without it, each pipe is its own.
        key = getattr(pipe, "pair", None) or pipe
        self.stream = self.toxic.recorder.open(key, self.toxic.direction)

    def feed(self, data: bytes) -> None:
        self.toxic.recorder.data(self.stream, data)
        self.next.feed(data)

    def feed_eof(self) -> None:
        self.toxic.recorder.eof(self.stream)
        self.next.feed_eof()


@dataclass(frozen=True, repr=False)
class Tap(Toxic):
    """Record every byte of ``direction`` into ``recorder`` and pass it on unchanged."""

    name = "tap"
    stage_class = _TapStage
    recorder: Recorder = field(default_factory=Recorder, compare=False)
    direction: str = "upstream"

    def __repr__(self) -> str:
        return f"Tap({self.direction})"


class _ToNext:
    """The wrapped stage's next link: whatever follows the wrapping stage now."""

    def __init__(self, owner: Stage) -> None:
        self.owner = owner

    def feed(self, data: bytes) -> None:
        self.owner.next.feed(data)

    def feed_eof(self) -> None:
        self.owner.next.feed_eof()


class _AtReplyStage(Stage):
    toxic: AtReply

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        recorder = self.toxic.recorder
        self.connection = recorder.number(getattr(pipe, "pair", None) or pipe)
        self.stream = bytearray()
        self.passed = 0
        self.inner: Stage | None = None

    def _cut(self) -> int | None:
        """The stream offset where the wrapped toxic takes over (None: not known yet)."""
        recorder = self.toxic.recorder
        index = recorder.interest_of(self.connection)
        if index is None or recorder.exchange is None:
            return None
        start = 0
        if index:
            replies = split_replies(recorder.exchange, bytes(self.stream))
            if len(replies) < index:
                return None
            offset, length = replies[index - 1]
            start = offset + length
        return max(start + self.toxic.skip, self.passed)

    def feed(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.feed(data)
            return
        self.stream += data
        cut = self._cut()
        if cut is None or cut >= len(self.stream):
            self.passed += len(data)
            self.next.feed(data)
            return
        head = cut - self.passed
        if head:
            self.next.feed(data[:head])
        self.passed = cut
        inner = self.toxic.toxic.make_stage(self.pipe, self.rng)
        inner.name = self.name
        inner.next = _ToNext(self)
        self.inner = inner
        self.pipe.note(self, f"at byte {cut} (the reply to the request of interest, "
                             f"+{self.toxic.skip} B): {self.toxic.toxic!r} from here on")
        inner.start()
        inner.feed(data[head:])

    def feed_eof(self) -> None:
        if self.inner is not None:
            self.inner.feed_eof()
        else:
            self.next.feed_eof()

    def detach(self) -> None:
        if self.inner is not None:
            self.inner.detach()

    def stop(self) -> None:
        if self.inner is not None:
            self.inner.stop()


@dataclass(frozen=True, repr=False)
class AtReply(Toxic):
    """``toxic`` from byte ``skip`` of the reply to the request of interest on (downstream):
    the upstream tap of ``recorder`` finds that request (its index among the connection's
    requests); this stage frames the replies before it and arms ``toxic`` there, whatever a
    client's handshake before it looked like."""

    name = "at_reply"
    stage_class = _AtReplyStage
    toxic: Toxic
    recorder: Recorder = field(default_factory=Recorder, compare=False)
    skip: int = 0

    def __repr__(self) -> str:
        return f"AtReply({self.toxic!r}, skip={self.skip})"


@dataclass(frozen=True, repr=False)
class FirstConnections(Toxic):
    """``toxic`` on the first ``count`` connections the direction sees; the later ones pass
    untouched (a fault that happens once, so that a client's retry can succeed)."""

    name = "first_connections"
    toxic: Toxic
    count: int = 1
    _made: Any = field(default_factory=itertools.count, compare=False)

    def make_stage(self, pipe: PipeAPI, rng: Random) -> Stage:
        if next(self._made) < self.count:
            return self.toxic.make_stage(pipe, rng)
        return NotApplied(self, "", pipe, rng)

    def __repr__(self) -> str:
        return f"FirstConnections({self.toxic!r}, count={self.count})"


class _GarbageStage(Stage):
    toxic: Garbage

    def __init__(self, toxic: Toxic, name: str, pipe: PipeAPI, rng: Random) -> None:
        super().__init__(toxic, name, pipe, rng)
        self.sent = False

    def feed(self, data: bytes) -> None:
        self.pipe.dropped(len(data))
        if not self.sent:
            self.sent = True
            self.pipe.note(self, f"reply replaced by {len(self.toxic.data)} B of garbage",
                           len(data))
            self.next.feed(self.toxic.data)


@dataclass(frozen=True, repr=False)
class Garbage(Toxic):
    """Drop the stream and send ``data`` in its place, once; the connection stays open."""

    name = "garbage_reply"
    stage_class = _GarbageStage
    data: bytes = b"\x00"

    def __repr__(self) -> str:
        return f"Garbage({self.data!r})"


__all__ = ["AtReply", "FirstConnections", "Garbage", "Recorder", "Stream", "Tap"]
