"""One side of a proxied connection: the client's socket or the target's (:class:`Side`).

A side is a :class:`~pytest_multiconn.core.connection.Connection` whose reads go to the other
side, either straight (the fast path), through the direction's pipeline of faults, or through
a kernel pipe (splice).  What it asks of the connection it belongs to is :class:`SidePair`;
the pipeline and the kernel pipe are seen through :class:`Intake` and :class:`Spliced`, so
this module imports neither.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Protocol

from pytest_multiconn.core.address import SocketAddress
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Loop
from pytest_multiconn.core.transcript import Transcript
from pytest_multiconn.proxy.transcript import CLIENT_NAMES, SERVER_NAMES

# Reasons a side stops reading (a bit each, so one cause clearing does not resume the other).
PAUSE_PEER_FULL = 1  # the other side's output buffer is over its high-water mark
PAUSE_PIPE_FULL = 2  # this direction's pipeline holds more than the high-water mark
PAUSE_SPLICE_FULL = 4  # this direction's kernel pipe is full (or holds end-of-stream)

# When a fault-free direction looks like bulk, it may move to splice (see the essay in
# proxy/splice.py): more than SPLICE_AFTER bytes moved and one read of SPLICE_BULK_READ or more.
SPLICE_AFTER = 256 * 1024
SPLICE_BULK_READ = 16 * 1024
#: Sends one writable event may make for pieces written apart (see Side.write_apart).
APART_SENDS_PER_EVENT = 64


class SidePair(Protocol):
    """What a side asks of the proxied connection it belongs to."""

    number: int
    transcript: Transcript

    def setup(self) -> None: ...

    def connect_upstream(self) -> None: ...

    def upstream_connected(self) -> None: ...

    def maybe_splice(self, src: Side) -> None: ...

    def side_lost(self, side: Side, exc: BaseException | None) -> None: ...


class Intake(Protocol):
    """Where a side with faults on its direction puts what it reads (the pipeline's head)."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...


class Spliced(Protocol):
    """A kernel pipe that relays this side's reads (or its writes) without user space."""

    pending: int

    def pull(self) -> None: ...

    def push(self) -> None: ...


class Side(Connection):
    """The client's socket or the target's; what it reads goes to ``other``."""

    def __init__(self, pair: SidePair, role: str, sock: socket.socket,
                 peer: SocketAddress | None, *, loop: Loop, high_water: int,
                 low_water: int) -> None:
        super().__init__(
            loop,
            sock,
            peer,
            high_water=high_water,
            low_water=low_water,
            transcript_limit=0,
            label=f"proxy-{pair.number}-{role}",
        )
        self.pair = pair
        self.role = role
        #: The direction of the bytes this side reads.
        self.direction = "upstream" if role == "client" else "downstream"
        self.transcript = pair.transcript.view(CLIENT_NAMES if role == "client" else SERVER_NAMES)
        self.other: Side
        self.pipe: Intake | None = None  # None: the fast path, write straight into other
        self.pause_bits = 0
        self.splice: Spliced | None = None  # what this side reads goes through a kernel pipe
        self.splice_in: Spliced | None = None  # ...and this is the one this side writes out
        # Sizes of the pieces at the front of the output buffer that must leave in sends of
        # their own (write_apart), and their sum; bytes after them may leave together.
        self.apart: deque[int] = deque()
        self.apart_total = 0

    # -- writes that keep their boundaries ----------------------------------------------------
    def write_apart(self, data: bytes) -> None:
        """Write ``data`` in a send() of its own, never merged with the bytes before or after
        it, also when they wait in the output buffer (a connect in progress, a full socket
        buffer): what a pipeline delivers as one piece (a slice) reaches the kernel as one
        write, and the transcript counts one op per send.  ``send_allowance`` cuts each send
        at the next boundary; ``after_send`` moves past it."""
        if not self.accepts_writes or not data:
            return
        apart = self.apart
        buffered = self.buffered
        if not buffered:
            apart.clear()
            self.apart_total = 0
        elif buffered > self.apart_total:
            # Bytes written merged after the last piece: one piece of their own.
            apart.append(buffered - self.apart_total)
            self.apart_total = buffered
        apart.append(len(data))
        self.apart_total += len(data)
        self.write(data)

    # -- what a pipeline asks (PipeSource of its source side, PipeTarget of its destination) --
    @property
    def intake_paused(self) -> bool:
        return bool(self.pause_bits & PAUSE_PIPE_FULL)

    def pause_intake(self) -> None:
        self.pause_for(PAUSE_PIPE_FULL)

    def resume_intake(self) -> None:
        self.resume_for(PAUSE_PIPE_FULL)

    @property
    def accepting(self) -> bool:
        return not self.connecting

    def put(self, data: bytes) -> None:
        self.write_apart(data)

    def put_merged(self, data: bytes) -> None:
        self.write(data)

    def put_eof(self) -> None:
        self.write_eof()
        if self.eof_received and self.eof_sent:
            self.finish()

    def send_allowance(self) -> int | None:
        limit = self.max_send
        if self.apart:
            first = self.apart[0]
            return first if limit is None else min(limit, first)
        return limit

    def after_send(self, sent: int) -> None:
        apart = self.apart
        while sent and apart:
            take = min(sent, apart[0])
            sent -= take
            self.apart_total -= take
            if take == apart[0]:
                apart.popleft()
            else:
                apart[0] -= take

    # The spliced path bypasses Connection's recv/send: these four route events to it.
    def handle_event(self, mask: int) -> None:
        if self.connecting:
            self._finish_connect()
            return
        if mask & EVENT_READ:
            splice = self.splice
            if splice is None:
                self._on_readable()
            else:
                splice.pull()
        if mask & EVENT_WRITE and not self.closed:
            splice = self.splice_in
            if splice is not None and splice.pending:
                splice.push()
            else:
                self.flush_output()
                # One send per piece written apart: a few more while the socket takes them.
                for _ in range(APART_SENDS_PER_EVENT - 1):
                    if not self.apart or self.closed or not self.wants_write:
                        break
                    sent = self.bytes_out
                    self.flush_output()
                    if self.bytes_out == sent:
                        break

    def _update_interest(self) -> None:
        splice = self.splice_in
        if splice is None or not splice.pending or self.closed or self.connecting:
            super()._update_interest()
            return
        # Bytes wait in the kernel pipe for this socket: ask for writability (our own output
        # buffer is empty while a direction is spliced).
        mask = EVENT_WRITE
        if not self.reading_paused and not self.eof_received:
            mask |= EVENT_READ
        self._set_interest(mask)

    def finish(self) -> None:
        splice = self.splice_in
        if splice is not None and splice.pending and not self.closed:
            self.defer_finish()  # close once the kernel pipe is drained to the peer
            return
        super().finish()

    def connection_made(self) -> None:
        if self.role == "client":
            # Faults start here, not in make_connection: the server has registered this
            # connection by now, so a fault that closes it at once is accounted for.
            self.pair.setup()
            if not self.closed:
                self.pair.connect_upstream()
        else:
            self.pair.upstream_connected()

    def data_received(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe is None:
            self.other.write(data)
            if len(data) >= SPLICE_BULK_READ and self.bytes_in >= SPLICE_AFTER:
                self.pair.maybe_splice(self)
        else:
            pipe.feed(data)

    def on_eof(self) -> None:
        pipe = self.pipe
        if pipe is None:
            self.other.write_eof()
        else:
            pipe.feed_eof()
        if self.eof_sent:
            self.finish()  # both directions ended

    def pause_writing(self) -> None:
        self.other.pause_for(PAUSE_PEER_FULL)

    def resume_writing(self) -> None:
        self.other.resume_for(PAUSE_PEER_FULL)

    def pause_for(self, bit: int) -> None:
        self.pause_bits |= bit
        self.pause_reading()

    def resume_for(self, bit: int) -> None:
        self.pause_bits &= ~bit
        if not self.pause_bits:
            self.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.pair.side_lost(self, exc)


__all__ = [
    "APART_SENDS_PER_EVENT",
    "PAUSE_PEER_FULL",
    "PAUSE_PIPE_FULL",
    "PAUSE_SPLICE_FULL",
    "SPLICE_AFTER",
    "SPLICE_BULK_READ",
    "Intake",
    "Side",
    "SidePair",
    "Spliced",
]
