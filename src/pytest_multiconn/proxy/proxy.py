"""A fault-injecting TCP proxy on the selector loop: :class:`FaultProxy`.

Each accepted client gets a new connection to the target, and the proxy relays bytes between
the two.  Directions use toxiproxy's words: **upstream** is client to server (what the
proxy reads from the client and writes to the target), **downstream** is server to client.

Without faults, a chunk read on one side is written straight into the other side's
:class:`~pytest_multiconn.Connection` (the same cost as an echo).  A direction gets a pipeline
(:class:`_Pipe`) only when a fault or step mode applies to it: a chain of toxic stages
ending in a gate that writes to the socket, or holds the bytes until the test releases them.

Relay rules:

* end-of-stream is forwarded after the data: a half-close on one side becomes a half-close
  (``shutdown(SHUT_WR)``) on the other, and a connection closes once both directions ended;
* an error on one side (RST, refused connect) becomes an RST on the other;
* backpressure: when one side's output buffer passes its high-water mark, or a direction's
  pipeline holds more than that, the proxy stops reading from the sending side, so a slow
  reader makes the kernel push back on the writer instead of the proxy buffering.

On Linux a bulk direction without faults is relayed inside the kernel with ``splice()``
(:class:`_Splice`; the essay above it says why, what it costs, and how a direction leaves it).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from random import Random
from typing import Any, Literal

from pytest_multiconn.core.address import check_host, family_for, parse_port
from pytest_multiconn.core.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_TRANSCRIPT_LIMIT,
    Connection,
    Transcript,
)
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, EVENT_READ, EVENT_WRITE
from pytest_multiconn.core.seed import derive_seed, get_run_seed
from pytest_multiconn.core.server import ConnectionInfo, ServerBase, _Listener
from pytest_multiconn.errors import WaitTimeout
from pytest_multiconn.proxy.toxics import Stage, Toxic

Direction = Literal["upstream", "downstream", "both"]
DIRECTIONS: tuple[str, str] = ("upstream", "downstream")
_SHORT = {"upstream": "up", "downstream": "down"}

# Reasons a side stops reading (a bit each, so one cause clearing does not resume the other).
_PAUSE_PEER_FULL = 1  # the other side's output buffer is over its high-water mark
_PAUSE_PIPE_FULL = 2  # this direction's pipeline holds more than the high-water mark
_PAUSE_SPLICE_FULL = 4  # this direction's kernel pipe is full (or holds end-of-stream)

# The zero-copy relay (see the essay above _Splice).
_SPLICE: Callable[..., int] | None = getattr(os, "splice", None)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ / F_GETPIPE_SZ (Linux), named in fcntl from 3.10
_F_GETPIPE_SZ = 1032
_SPLICE_PIPE_SIZE = 256 * 1024
_SPLICE_AFTER = 256 * 1024  # a direction is bulk once it moved this much...
_SPLICE_BULK_READ = 16 * 1024  # ...and one read returned at least this much
# A kernel, sandbox or socket type that cannot splice says so with one of these: stay in user space.
_SPLICE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})

# Transcript labels: (client side, server side) names for Connection's own event names.
_CLIENT_NAMES = {
    "in": "from-client", "out": "to-client", "eof-in": "eof-from-client",
    "eof-out": "eof-to-client", "connect": "client-connect", "close": "client-close",
    "reset": "client-reset", "note": "client-note",
}
_SERVER_NAMES = {
    "in": "from-server", "out": "to-server", "eof-in": "eof-from-server",
    "eof-out": "eof-to-server", "connect": "server-connect", "close": "server-close",
    "reset": "server-reset", "note": "server-note",
}
_MERGED = frozenset({"from-client", "to-client", "from-server", "to-server", "fault"})


# -- transcripts ------------------------------------------------------------------------------
class ProxyTranscript(Transcript):
    """One bounded transcript for both sides of a proxied connection.

    Entries name the side and direction (``from-client``, ``to-server``, ``eof-to-client``,
    ``server-reset``...); ``fault`` entries say which fault acted, on how many bytes.
    """

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0) -> None:
        if self.limit <= 0:
            return
        if not now:
            now = time.monotonic()
        entries = self._entries
        if entries and direction in _MERGED:
            last = entries[-1]
            if last[2] == direction and last[5] == note:
                last[1] = now
                last[3] += size
                last[4] += 1
                return
        if len(entries) >= self.limit:
            del entries[1]
            self.dropped += 1
        entries.append([now, now, direction, size, 1, note])

    def format(self, indent: str = "  ") -> str:
        lines = []
        for start, _end, direction, size, count, note in self._entries:
            line = f"{indent}{(start - self.origin) * 1e3:9.2f}ms {direction:<15}"
            if direction in _MERGED and (size or direction != "fault"):
                line += f" {size:>8} B" + (f" in {count} ops" if count > 1 else "")
            lines.append(f"{line}  {note}".rstrip())
        if self.dropped:
            lines.insert(1, f"{indent}... {self.dropped} earlier entries dropped ...")
        return "\n".join(lines)


class _SideTranscript(Transcript):
    """What one side's Connection records into, renamed and forwarded to the shared one."""

    def __init__(self, shared: ProxyTranscript, names: dict[str, str]) -> None:
        super().__init__(0, shared.origin)
        self.shared = shared
        self.names = names

    def record(self, direction: str, size: int = 0, note: str = "", now: float = 0.0) -> None:
        self.shared.record(self.names.get(direction, direction), size, note, now)

    def entries(self) -> Any:
        return self.shared.entries()

    def __iter__(self) -> Any:
        return iter(self.shared)

    def __len__(self) -> int:
        return len(self.shared)

    def format(self, indent: str = "  ") -> str:
        return self.shared.format(indent)


# -- one side of a proxied connection ------------------------------------------------------
class _Side(Connection):
    """The client's socket or the target's; what it reads goes to ``other``."""

    def __init__(self, pair: _Pair, role: str, sock: socket.socket, peer: Any) -> None:
        proxy = pair.proxy
        super().__init__(
            proxy.loop,
            sock,
            peer,
            high_water=proxy.high_water,
            low_water=proxy.low_water,
            transcript_limit=0,
            label=f"proxy-{pair.number}-{role}",
        )
        self.pair = pair
        self.role = role
        #: The direction of the bytes this side reads.
        self.direction = "upstream" if role == "client" else "downstream"
        self.transcript = _SideTranscript(
            pair.transcript, _CLIENT_NAMES if role == "client" else _SERVER_NAMES
        )
        self.other: _Side
        self.pipe: _Pipe | None = None  # None: the fast path, write straight into other
        self.pause_bits = 0
        self.splice: _Splice | None = None  # what this side reads goes through a kernel pipe
        self.splice_in: _Splice | None = None  # ...and this is the one this side writes out

    # The spliced path bypasses Connection's recv/send: these four route events to it.
    def handle_event(self, mask: int) -> None:
        if self._connecting:
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
                self._on_writable()

    def _update_interest(self) -> None:
        splice = self.splice_in
        if splice is None or not splice.pending or self.closed or self._connecting:
            super()._update_interest()
            return
        # Bytes wait in the kernel pipe for this socket: ask for writability (our own output
        # buffer is empty while a direction is spliced).
        mask = EVENT_WRITE
        if not self._reading_paused and not self._eof_received:
            mask |= EVENT_READ
        self._set_interest(mask)

    def finish(self) -> None:
        splice = self.splice_in
        if splice is not None and splice.pending and not self.closed:
            self._finish_pending = True  # close once the kernel pipe is drained to the peer
            self._update_interest()
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
            self.pair.connected = True
            self.pair.proxy._notify()

    def data_received(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe is None:
            self.other.write(data)
            if len(data) >= _SPLICE_BULK_READ and self.bytes_in >= _SPLICE_AFTER:
                self.pair.maybe_splice(self)
        else:
            pipe.feed(data)

    def on_eof(self) -> None:
        pipe = self.pipe
        if pipe is None:
            self.other.write_eof()
        else:
            pipe.feed_eof()
        if self._eof_sent and not self.closed:
            self.finish()  # both directions ended

    def pause_writing(self) -> None:
        self.other.pause_for(_PAUSE_PEER_FULL)

    def resume_writing(self) -> None:
        self.other.resume_for(_PAUSE_PEER_FULL)

    def pause_for(self, bit: int) -> None:
        self.pause_bits |= bit
        self.pause_reading()

    def resume_for(self, bit: int) -> None:
        self.pause_bits &= ~bit
        if not self.pause_bits:
            self.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.pair.side_lost(self, exc)


# -- a direction's pipeline ----------------------------------------------------------------
class _Gate:
    """The pipeline's last link: writes to the socket, or holds bytes in step mode."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    def feed(self, data: bytes) -> None:
        self.pipe.deliver(data)

    def feed_eof(self) -> None:
        self.pipe.deliver_eof()


class _Pipe:
    """Toxic stages for one direction of one connection, then the gate (loop thread only)."""

    def __init__(self, pair: _Pair, direction: str) -> None:
        self.pair = pair
        self.direction = direction
        self.loop = pair.proxy.loop
        self.src = pair.client if direction == "upstream" else pair.server
        self.dst = self.src.other
        self.stages: list[Stage] = []
        self.gate = _Gate(self)
        self.head: Any = self.gate
        self.held = False
        self.held_bytes = bytearray()
        self.held_eof = False
        self.inflight = 0  # bytes fed and not yet written or dropped
        self.eof_in = False
        self.eof_out = False
        self.cut = False  # end-of-stream was forced by the test: drop what follows
        self.closing: str | None = None
        self.high_water = pair.proxy.high_water
        self.low_water = pair.proxy.low_water

    def __repr__(self) -> str:
        return (
            f"<_Pipe {self.direction} stages={[s.name for s in self.stages]} held={self.held} "
            f"inflight={self.inflight} pending={len(self.held_bytes)}>"
        )

    # -- the source side feeds ----------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.inflight += len(data)
        if self.cut:
            self.dropped(len(data))
            return
        self.head.feed(data)
        if self.inflight > self.high_water and not self.src.pause_bits & _PAUSE_PIPE_FULL:
            self.src.pause_for(_PAUSE_PIPE_FULL)

    def feed_eof(self) -> None:
        self.eof_in = True
        if self.cut:
            return
        self.head.feed_eof()

    # -- the gate ---------------------------------------------------------------------------
    def deliver(self, data: bytes) -> None:
        if self.held:
            self.held_bytes += data
            self.pair.proxy._notify()
            return
        self.inflight -= len(data)
        self.dst.write(data)
        self._drained()

    def deliver_eof(self) -> None:
        if self.held:
            self.held_eof = True
            self.pair.proxy._notify()
            return
        self._write_eof()

    def _write_eof(self) -> None:
        self.eof_out = True
        dst = self.dst
        dst.write_eof()
        if dst._eof_received and dst._eof_sent and not dst.closed:
            dst.finish()
        self._drained()

    def dropped(self, size: int) -> None:
        self.inflight -= size
        self._drained()

    def _drained(self) -> None:
        if self.src.pause_bits & _PAUSE_PIPE_FULL and self.inflight <= self.low_water:
            self.src.resume_for(_PAUSE_PIPE_FULL)
        if self.closing is not None and self.idle():
            reason, self.closing = self.closing, None
            self.pair.finish(reason)

    def idle(self) -> bool:
        """Nothing in flight: every byte (and end-of-stream, if it came) was delivered."""
        return self.inflight <= 0 and (not self.eof_in or self.eof_out or self.cut)

    # -- what stages may ask (PipeAPI) ---------------------------------------------------------
    def note(self, stage: Stage, text: str, size: int = 0) -> None:
        self.pair.transcript.record("fault", size, f"{stage.name}: {text}")

    def finish_connection(self, reason: str) -> None:
        self.pair.finish(reason)

    def reset_connection(self, reason: str) -> None:
        self.pair.reset(reason)

    def close_after_flush(self, reason: str) -> None:
        if self.idle():
            self.pair.finish(reason)
        else:
            self.closing = reason

    # -- toxics -------------------------------------------------------------------------------
    def _relink(self) -> None:
        chain: list[Any] = [*self.stages, self.gate]
        for stage, nxt in zip(self.stages, chain[1:], strict=True):
            stage.next = nxt
        self.head = chain[0]

    def add(self, stage: Stage) -> None:
        self.stages.append(stage)
        self._relink()
        stage.start()

    def remove(self, name: str) -> bool:
        for i, stage in enumerate(self.stages):
            if stage.name == name:
                del self.stages[i]
                self._relink()
                stage.detach()  # passes what it held to its old next link, in order
                return True
        return False

    # -- step mode ------------------------------------------------------------------------------
    def release(self, n: int) -> None:
        data = bytes(self.held_bytes[:n])
        del self.held_bytes[:n]
        self.inflight -= len(data)
        self.pair.transcript.record("fault", len(data), f"step: released {self.direction}")
        self.dst.write(data)
        self._drained()

    def release_eof(self) -> int:
        discarded = len(self.held_bytes)
        if discarded:
            self.held_bytes.clear()
            self.pair.transcript.record(
                "fault", discarded, f"step: dropped {self.direction} at forced end-of-stream"
            )
        self.inflight -= discarded
        self.held_eof = False
        self.cut = True
        self.pair.transcript.record("fault", 0, f"step: end-of-stream sent {self.direction}")
        self._write_eof()
        return discarded

    def unhold(self) -> None:
        self.held = False
        if self.held_bytes:
            self.release(len(self.held_bytes))
        if self.held_eof:
            self.held_eof = False
            self._write_eof()

    def stop(self) -> None:
        for stage in self.stages:
            stage.stop()


# -- the zero-copy relay -------------------------------------------------------------------------
# Why splice.  Relaying in user space costs every byte two copies (recv() copies it out of the
# source socket, send() copies it into the destination) and a Python round trip per 64 KiB
# chunk; py-spy put ~90% of a streaming proxy's busy time in those syscalls and epoll, so
# faster Python could not help.  Linux's splice(2) moves pages between a file descriptor and a
# pipe without copying them through user space: socket -> pipe is one splice, pipe -> socket
# another, and the bytes never leave the kernel.  A pipe is needed because splice() needs one
# on one end; each spliced direction owns one (os.pipe2, non-blocking), grown to 256 KiB when
# the kernel lets us (F_SETPIPE_SZ; an unprivileged user past fs.pipe-user-pages-soft gets
# less, which only costs speed).  Bigger buys nothing here: on loopback a 1 MiB pipe streamed
# no faster than the 64 KiB default (benchmarks/proxy.py), and pipe memory is charged to the
# user, shared with every other process it runs.
#
# What it costs.  Two descriptors per spliced direction, and pipe memory charged to the user.
# The proxy no longer sees the bytes, so it can only count them: that is enough for the
# counters and the transcript (splice amounts are recorded as the usual in/out entries), and
# is why only a direction without faults, hold or step mode is spliced.  Short connections
# and ping-pong gain nothing from it (the syscall count is the same) but would pay the pipe's
# set-up and its descriptors, so a direction switches to splice only once it looks like bulk
# (more than _SPLICE_AFTER bytes moved and a read of _SPLICE_BULK_READ or more), and only
# while its destination's output buffer is empty, so spliced bytes cannot overtake buffered
# ones.  Backpressure is the pipe itself: when it is full (splice in says EAGAIN with bytes
# still in it), the source stops being read until the destination, watched for EVENT_WRITE,
# has taken them; what the proxy holds is then bounded by the pipe size.  End-of-stream
# (splice returns 0) is forwarded only once the pipe is empty; ECONNRESET/EPIPE from either
# splice take the usual RST-forwarding path.  Kernels, sandboxes or sockets that cannot
# splice (EINVAL, ENOSYS...) turn it off for the proxy and the bytes go the user-space way.
#
# The pipe-drain rule.  When a fault is added to a spliced direction or it is held, the
# bytes in its kernel pipe were already read from the source: they belong to the destination,
# exactly like bytes in its output buffer on the user-space path (a fault applies to what is
# read after it was added).  So before the direction gets its pipeline, the pipe is read out
# (os.read) and written to the destination's Connection in order, then the pipe is closed;
# an end-of-stream already seen is read again by the user-space path (it is sticky) and goes
# through the new pipeline after those bytes.  Nothing is lost, duplicated or reordered.
class _Splice:
    """One direction relayed inside the kernel: source socket -> pipe -> destination socket.

    ``pending`` counts the bytes sitting in the pipe (loop thread only).
    """

    __slots__ = ("dst", "eof", "moved", "pair", "pending", "r", "size", "src", "w")

    def __init__(self, pair: _Pair, src: _Side, r: int, w: int, size: int) -> None:
        self.pair = pair
        self.src = src
        self.dst = src.other
        self.r = r
        self.w = w
        self.size = size
        self.pending = 0
        self.moved = 0  # bytes that crossed by splice (diagnostics and tests)
        self.eof = False

    def __repr__(self) -> str:
        return (f"<_Splice {self.src.direction} pipe={self.r},{self.w} size={self.size} "
                f"pending={self.pending} moved={self.moved}{' eof' if self.eof else ''}>")

    def pull(self) -> None:
        """The source is readable: move what it has into the pipe, then on to the destination."""
        src = self.src
        room = self.size - self.pending
        if room <= 0:
            src.pause_for(_PAUSE_SPLICE_FULL)
            return
        try:
            n = _SPLICE(src.fd, self.w, room, flags=_SPLICE_FLAGS)  # type: ignore[misc]
        except BlockingIOError:
            if self.pending:
                # The pipe has no free slot (a slot can hold less than a page, so this may
                # come before `size` bytes): wait for the destination to take some.
                src.pause_for(_PAUSE_SPLICE_FULL)
            return
        except OSError as exc:
            if exc.errno in _SPLICE_UNSUPPORTED:
                self.pair.proxy._use_splice = False
                self.pair.unsplice(self)
                return
            src._peer_failed(exc)
            return
        if not n:
            self.eof = True
            if self.pending:
                src.pause_for(_PAUSE_SPLICE_FULL)  # forwarded when the pipe is empty
            else:
                self.pair.splice_eof(self)
            return
        self.pending += n
        self.moved += n
        src.bytes_in += n
        src.last_received = now = time.monotonic()
        src.transcript.record("in", n, "", now)
        self.push()

    def push(self) -> None:
        """Move what the pipe holds to the destination, as far as it takes it."""
        dst = self.dst
        pending = self.pending
        try:
            while pending:
                n = _SPLICE(self.r, dst.fd, pending, flags=_SPLICE_FLAGS)  # type: ignore[misc]
                if not n:
                    break
                pending -= n
                dst.bytes_out += n
                dst.transcript.record("out", n)
        except BlockingIOError:
            pass
        except OSError as exc:
            self.pending = pending
            if exc.errno in _SPLICE_UNSUPPORTED:
                self.pair.proxy._use_splice = False
                self.pair.unsplice(self)
                return
            dst._peer_failed(exc)
            return
        self.pending = pending
        if pending:
            if not dst._mask & EVENT_WRITE:
                dst._update_interest()
            return
        if dst._mask & EVENT_WRITE or dst._finish_pending:
            dst._on_writable()  # drop EVENT_WRITE; close now if a finish() was waiting
            if self.r < 0:  # that closed the destination, and the pair tore us down
                return
        if self.eof:
            self.pair.splice_eof(self)
        elif self.src.pause_bits & _PAUSE_SPLICE_FULL:
            self.src.resume_for(_PAUSE_SPLICE_FULL)

    def take(self) -> bytes:
        """Read out what the pipe holds (to hand it to the user-space path)."""
        chunks = []
        left = self.pending
        while left > 0:
            try:
                chunk = os.read(self.r, left)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        self.pending = 0
        return b"".join(chunks)

    def close(self) -> None:
        if self.r >= 0:
            os.close(self.r)
            os.close(self.w)
            self.r = self.w = -1


def _make_pipe() -> tuple[int, int, int] | None:
    """A non-blocking pipe for splicing, as large as the kernel allows up to 256 KiB."""
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # out of descriptors: this direction stays in user space
    import fcntl  # Linux only, like os.splice; imported here so other platforms never need it

    # Over the per-user pipe budget or fs.pipe-max-size this fails: keep the default size.
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, _SPLICE_PIPE_SIZE)
    try:
        size = fcntl.fcntl(w, _F_GETPIPE_SZ)
    except OSError:
        size = 64 * 1024
    return r, w, size


# -- a proxied connection ----------------------------------------------------------------------
class _Pair:
    """The client side, the server side and the pipelines between them (loop thread)."""

    def __init__(self, proxy: FaultProxy, number: int) -> None:
        self.proxy = proxy
        self.number = number
        self.transcript = ProxyTranscript(proxy.transcript_limit)
        self.client: _Side
        self.server: _Side
        self.pipes: dict[str, _Pipe | None] = {"upstream": None, "downstream": None}
        self.spliced_bytes = {"upstream": 0, "downstream": 0}  # by splice, in closed pipes
        self.connected = False
        self.done = False
        self.resetting = False
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.end_reason = ""

    def __repr__(self) -> str:
        if self.done:
            state = f"closed ({self.end_reason})"
        else:
            state = "open" if self.connected else "connecting"
        return f"<proxied connection #{self.number} {state} client={self.client.peer!r}>"

    def sides(self) -> tuple[_Side, _Side]:
        return self.client, self.server

    def setup(self) -> None:
        proxy = self.proxy
        for entry in list(proxy._toxics.values()):
            for d in entry.directions():
                self.add_stage(entry, d)
        if proxy._hold_new:
            for d in DIRECTIONS:
                self.pipe(d).held = True

    def connect_upstream(self) -> None:
        self.server.connect(self.proxy.target)

    def pipe(self, direction: str) -> _Pipe:
        pipe = self.pipes[direction]
        if pipe is None:
            src = self.client if direction == "upstream" else self.server
            if src.splice is not None:
                self.unsplice(src.splice)  # the pipe-drain rule: see the essay above _Splice
            pipe = self.pipes[direction] = _Pipe(self, direction)
            pipe.src.pipe = pipe
        return pipe

    def maybe_splice(self, src: _Side) -> None:
        """Relay what ``src`` reads by splice() from now on, if nothing stands in the way."""
        dst = src.other
        if (not self.proxy._use_splice or src.pipe is not None or src.splice is not None
                or self.done or not self.connected or src.closed or dst.closed
                or src._eof_received or src._connecting or dst._connecting or dst._out
                or dst._eof_pending or dst._eof_sent or dst._output_held
                or dst.max_send is not None or src.pause_bits):
            return
        made = _make_pipe()
        if made is None:
            return
        r, w, size = made
        src.splice = dst.splice_in = _Splice(self, src, r, w, size)

    def unsplice(self, splice: _Splice) -> None:
        """Back to the user-space path: the pipe's bytes go to the destination first."""
        src, dst = splice.src, splice.dst
        src.splice = None
        dst.splice_in = None
        self.spliced_bytes[src.direction] += splice.moved
        self.proxy._spliced_bytes += splice.moved
        data = splice.take() if splice.pending and not dst.closed else b""
        splice.pending = 0
        splice.close()
        if not dst.closed:
            dst._update_interest()
            if data:
                dst.write(data)
            if dst._finish_pending and not dst._out and not dst.closed:
                dst.close(reason="finished")
        if not src.closed and src.pause_bits & _PAUSE_SPLICE_FULL:
            # An end-of-stream splice saw is seen again by recv(): it stays readable.
            src.resume_for(_PAUSE_SPLICE_FULL)

    def splice_eof(self, splice: _Splice) -> None:
        """End-of-stream spliced with the pipe empty: forward it as the user-space path does."""
        src = splice.src
        self.unsplice(splice)
        if src.closed or src._eof_received:
            return
        src._eof_received = True
        src.transcript.record("eof-in")
        src._update_interest()
        src.on_eof()

    def spliced(self) -> dict[str, int]:
        """Bytes each direction moved by splice so far (tests and diagnostics)."""
        moved = dict(self.spliced_bytes)
        for side in self.sides():
            if side.splice is not None:
                moved[side.direction] += side.splice.moved
        return moved

    def maybe_fast_path(self, direction: str) -> None:
        """Drop a pipeline that has no stage, no hold and nothing in flight."""
        pipe = self.pipes[direction]
        if (pipe is not None and not pipe.stages and not pipe.held and pipe.idle()
                and not pipe.cut and pipe.closing is None):
            self.pipes[direction] = None
            pipe.src.pipe = None

    def add_stage(self, entry: _ToxicEntry, direction: str) -> None:
        proxy = self.proxy
        if entry.probability < 1.0:
            draw = Random(derive_seed(proxy.seed, "toxicity", self.number, direction, entry.name))
            if draw.random() >= entry.probability:
                self.transcript.record(
                    "fault", 0,
                    f"{entry.name}: not applied ({_SHORT[direction]}, p={entry.probability:g})",
                )
                return
        rng = Random(derive_seed(proxy.seed, "toxic", self.number, direction, entry.name))
        pipe = self.pipe(direction)
        stage = entry.toxic.make_stage(pipe, rng)
        stage.name = f"{entry.name}[{_SHORT[direction]}]"
        stage.toxic_name = entry.name  # type: ignore[attr-defined]
        pipe.add(stage)
        if self.done:
            stage.stop()  # leaving splice mode flushed the last bytes and the pair closed

    def stages_named(self, name: str) -> Iterator[Stage]:
        for pipe in self.pipes.values():
            if pipe is not None:
                for stage in pipe.stages:
                    if getattr(stage, "toxic_name", None) == name:
                        yield stage

    def remove_stages(self, name: str) -> None:
        for direction, pipe in self.pipes.items():
            if pipe is not None:
                for stage in list(pipe.stages):
                    if getattr(stage, "toxic_name", None) == name:
                        pipe.remove(stage.name)
                self.maybe_fast_path(direction)

    # -- ending ---------------------------------------------------------------------------------
    def finish(self, reason: str) -> None:
        """Close both sides after flushing what they already have to send."""
        if self.done:
            return
        self.transcript.record("note", note=f"closing: {reason}")
        self.end_reason = self.end_reason or reason
        for side in self.sides():
            if not side.closed:
                side.finish()

    def reset(self, reason: str) -> None:
        """Close both sides with an RST."""
        if self.done:
            return
        self.end_reason = self.end_reason or reason
        self.resetting = True  # side_lost forwards the first side's reset to the other
        for side in self.sides():
            side.reset()

    def cut(self, reason: str) -> None:
        """Close both sides at once, dropping whatever was pending."""
        self.end_reason = self.end_reason or reason
        for side in self.sides():
            side.close(reason=reason)

    def side_lost(self, side: _Side, exc: BaseException | None) -> None:
        other = side.other
        # Close kernel pipes with the sockets: the one this side wrote out has no destination
        # any more; the one it read from stays only while it has bytes for a live other side.
        if side.splice_in is not None:
            self.unsplice(side.splice_in)
        if side.splice is not None and (not side.splice.pending or other.closed):
            self.unsplice(side.splice)
        if not other.closed:
            if exc is not None or self.resetting:
                # Linux reports a peer's RST as ECONNRESET on the next recv/send (EPIPE if we
                # wrote after it); closing our other socket with SO_LINGER {1, 0} makes the
                # kernel send an RST instead of a FIN, so the error crosses the proxy.  A failed
                # connect to the target is forwarded the same way: the client's connection is
                # reset, which is what it would have seen without the proxy, minus the refusal.
                self.end_reason = self.end_reason or f"{side.role}: {type(exc).__name__}"
                self.transcript.record("note", note=f"{side.role} failed: forwarding RST")
                other.reset()
            else:
                pipe = side.pipe
                if pipe is None or pipe.idle():
                    other.finish()
                else:
                    pipe.closing = f"{side.role} closed"
        if side.role == "client":
            self.proxy._connection_closed(side)
        if self.client.closed and self.server.closed and not self.done:
            self.done = True
            self.closed_at = time.monotonic()
            self.end_reason = self.end_reason or side.close_reason
            for pipe in self.pipes.values():
                if pipe is not None:
                    pipe.stop()
            self.proxy._pair_done(self)


@dataclass
class _ToxicEntry:
    name: str
    toxic: Toxic
    direction: str
    probability: float

    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS if self.direction == "both" else (self.direction,)


@dataclass(frozen=True)
class ToxicInfo:
    """A fault configured on a proxy: its name, parameters, direction and probability."""

    name: str
    toxic: Toxic
    direction: str
    probability: float


# -- the handle tests hold ------------------------------------------------------------------------
class ProxiedConnection:
    """A test's handle on one proxied connection: inspect it, step it, break it.

    Every method is thread-safe (it runs in the proxy's loop thread) and every wait is bounded.
    ``direction`` is "upstream" (client to server) or "downstream" (server to client).
    """

    def __init__(self, proxy: FaultProxy, pair: _Pair) -> None:
        self._proxy = proxy
        self._pair = pair

    def __repr__(self) -> str:
        return repr(self._pair)

    @property
    def number(self) -> int:
        """1 for the proxy's first connection, 2 for the next..."""
        return self._pair.number

    @property
    def client_address(self) -> Any:
        return self._pair.client.peer

    @property
    def closed(self) -> bool:
        return self._pair.done

    @property
    def end_reason(self) -> str:
        return self._pair.end_reason

    @property
    def transcript(self) -> str:
        """The connection's transcript, formatted (both sides, with fault actions)."""
        return str(self._run(self._pair.transcript.format))

    def entries(self) -> list[Any]:
        """The transcript's entries (:class:`~pytest_multiconn.TranscriptEntry`)."""
        return list(self._run(self._pair.transcript.entries))

    def stats(self) -> dict[str, int]:
        """Bytes read from the client (upstream) and from the server (downstream)."""
        def get() -> dict[str, int]:
            client, server = self._pair.client, self._pair.server
            return {"upstream": client.bytes_in, "downstream": server.bytes_in,
                    "to_server": server.bytes_out, "to_client": client.bytes_out}
        return dict(self._run(get))

    def _run(self, fn: Callable[[], Any]) -> Any:
        proxy = self._proxy
        if proxy._started and not proxy._stopped:
            return proxy.loop.run_sync(fn, proxy.timeout)
        return fn()

    def _directions(self, direction: str) -> tuple[str, ...]:
        return _check_direction(direction, allow_both=True)

    # -- step mode ------------------------------------------------------------------------------
    def hold(self, direction: Direction = "both") -> None:
        """Hold the bytes of ``direction`` at the proxy until ``release()``."""
        dirs = self._directions(direction)

        def go() -> None:
            for d in dirs:
                self._pair.pipe(d).held = True
        self._run(go)

    def unhold(self, direction: Direction = "both") -> None:
        """Deliver everything held in ``direction`` and let bytes flow freely again."""
        dirs = self._directions(direction)

        def go() -> None:
            for d in dirs:
                pipe = self._pair.pipes[d]
                if pipe is not None:
                    pipe.unhold()
                    self._pair.maybe_fast_path(d)
        self._run(go)

    def pending(self, direction: Direction = "downstream") -> int:
        """Bytes held at the proxy in ``direction``, waiting for ``release()``."""
        (d,) = _check_direction(direction, allow_both=False)

        def get() -> int:
            pipe = self._pair.pipes[d]
            return 0 if pipe is None else len(pipe.held_bytes)
        return int(self._run(get))

    def eof_pending(self, direction: Direction = "downstream") -> bool:
        """True if the sender's end-of-stream is held in ``direction``."""
        (d,) = _check_direction(direction, allow_both=False)

        def get() -> bool:
            pipe = self._pair.pipes[d]
            return pipe is not None and pipe.held_eof
        return bool(self._run(get))

    def wait_eof_pending(self, direction: Direction = "downstream",
                         timeout: float | None = None) -> None:
        """Wait until the sender's end-of-stream is held in ``direction``."""
        (d,) = _check_direction(direction, allow_both=False)

        def held() -> bool:
            pipe = self._pair.pipes[d]
            return pipe is not None and pipe.held_eof

        self._proxy._wait(held, timeout, f"end-of-stream held {d} on {self!r}")

    def wait_pending(self, n: int, direction: Direction = "downstream",
                     timeout: float | None = None) -> int:
        """Wait until at least ``n`` bytes are held in ``direction``; return how many are."""
        (d,) = _check_direction(direction, allow_both=False)

        def held() -> int:
            pipe = self._pair.pipes[d]
            return 0 if pipe is None else len(pipe.held_bytes)

        return int(self._proxy._wait(lambda: held() >= n, timeout,
                                     f"{n} bytes held {d} on {self!r}", held))

    def release(self, n: int, direction: Direction = "downstream",
                timeout: float | None = None) -> None:
        """Deliver exactly ``n`` held bytes of ``direction`` in one write, waiting (bounded)
        for them to arrive at the proxy first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"release() takes a byte count >= 0, got {n!r}")
        (d,) = _check_direction(direction, allow_both=False)
        self._require_held(d)
        self.wait_pending(n, d, timeout)  # type: ignore[arg-type]

        def go() -> None:
            pipe = self._pair.pipe(d)
            if len(pipe.held_bytes) < n:
                raise RuntimeError(f"{self!r}: only {len(pipe.held_bytes)} bytes held {d}")
            pipe.release(n)
        self._run(go)

    def release_eof(self, direction: Direction = "downstream") -> int:
        """Send end-of-stream to the receiver of ``direction`` now (after the bytes already
        released); bytes still held there are dropped.  Returns how many were dropped."""
        (d,) = _check_direction(direction, allow_both=False)
        self._require_held(d)
        return int(self._run(lambda: self._pair.pipe(d).release_eof()))

    def _require_held(self, d: str) -> None:
        def held() -> bool:
            pipe = self._pair.pipes[d]
            return pipe is not None and pipe.held
        if not self._run(held):
            raise RuntimeError(
                f"{self!r} is not held {d}; call hold() on it (or proxy.hold(), or "
                "FaultProxy(..., hold=True)) before releasing bytes step by step"
            )

    # -- ending ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Reset both sides now (each peer sees ECONNRESET)."""
        self._run(lambda: self._pair.reset("reset by the test"))

    def close(self) -> None:
        """Close both sides now, after flushing what they already have to send."""
        self._run(lambda: self._pair.finish("closed by the test"))

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until both sides are closed."""
        self._proxy._wait(lambda: self._pair.done, timeout, f"{self!r} to close")


def _check_direction(direction: str, *, allow_both: bool) -> tuple[str, ...]:
    if direction == "both" and allow_both:
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    allowed = '"upstream" (client to server), "downstream" (server to client)'
    if allow_both:
        allowed += ' or "both"'
    raise ValueError(f"direction must be {allowed}, got {direction!r}")


def _check_target(target: Any, allow_remote: bool) -> tuple[Any, socket.AddressFamily]:
    if isinstance(target, ServerBase):
        target = target.address
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target), socket.AF_UNIX
    try:
        host, port, *rest = target
    except (TypeError, ValueError):
        raise ValueError(
            f"target must be (host, port), a Unix socket path or a started server, got {target!r}"
        ) from None
    host = check_host(str(host), allow_remote=allow_remote, role="proxy to")
    port = parse_port(port, what="target port")
    if port == 0:
        raise ValueError("target port 0 is not a server's port; give the port it listens on")
    return (host, port, *rest), family_for(host)


# -- the proxy -------------------------------------------------------------------------------------
class FaultProxy(ServerBase):
    """A TCP proxy in front of ``target`` that injects faults on demand.

    ``target`` is ``(host, port)`` on loopback (``allow_remote=True`` for others), a Unix
    socket path, or a started server.  ``listen`` is ``(host, port)`` (port 0 = ephemeral) or
    a Unix socket path.  Faults are added with :meth:`add`; ``hold=True`` starts every
    connection in step mode.  ``seed`` overrides the run seed for every random draw.
    Use as a context manager, or ``start()`` / ``stop()``; ``check()`` re-raises loop errors.
    """

    kind = "proxy"

    def __init__(
        self,
        target: Any,
        listen: Any = ("127.0.0.1", 0),
        *,
        seed: int | None = None,
        hold: bool = False,
        allow_remote: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        backlog: int = 1024,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int | None = None,
        transcript_limit: int = DEFAULT_TRANSCRIPT_LIMIT,
        name: str | None = None,
    ) -> None:
        self.target, self.target_family = _check_target(target, allow_remote)
        if isinstance(listen, (str, os.PathLike)):
            host, port, unix_path = "127.0.0.1", 0, listen
        else:
            try:
                host, port = listen[0], listen[1]
            except (TypeError, IndexError, KeyError):
                raise ValueError(
                    f"listen must be (host, port) or a Unix socket path, got {listen!r}"
                ) from None
            unix_path = None
        super().__init__(
            host, port, unix_path=unix_path, allow_remote=allow_remote, backlog=backlog,
            max_connections=max_connections, idle_timeout=idle_timeout, high_water=high_water,
            low_water=low_water, transcript_limit=transcript_limit, name=name,
        )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = get_run_seed() if seed is None else seed
        self.timeout = timeout
        self._toxics: dict[str, _ToxicEntry] = {}
        self._hold_new = hold
        self._down = False
        self._pairs: dict[int, _Pair] = {}
        self._unclaimed: deque[_Pair] = deque()
        self._recent_pairs: deque[_Pair] = deque(maxlen=16)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        #: Splice bulk directions without faults (Linux); off for good after an EINVAL.
        self._use_splice = _SPLICE is not None
        self._spliced_bytes = 0  # moved by splice in pipes closed so far (tests, diagnostics)

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        extras = f" target={self.target!r} toxics={list(self._toxics)}"
        if self._down:
            extras += " DOWN"
        if self._hold_new:
            extras += " held"
        return f"{base}{extras}>"

    # -- faults (thread-safe) ---------------------------------------------------------------------
    def _run(self, fn: Callable[[], Any]) -> Any:
        if self._started and not self._stopped:
            return self.loop.run_sync(fn, self.timeout)
        return fn()

    def add(self, fault: Toxic, direction: Direction = "downstream", probability: float = 1.0,
            name: str | None = None) -> str:
        """Apply ``fault`` to ``direction`` of every connection, live and future; return its
        name (default ``<kind>_<direction>``, as toxiproxy names them).

        ``probability`` (toxiproxy's *toxicity*) is drawn once per connection and direction.
        """
        if not isinstance(fault, Toxic):
            raise TypeError(f"add() takes a fault such as Latency(ms=50), got {fault!r}")
        _check_direction(direction, allow_both=True)
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) \
                or not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be a number from 0 to 1, got {probability!r}")

        def go() -> str:
            nonlocal name
            if name is None:
                base = f"{fault.kind}_{direction}"
                name = base
                for i in itertools.count(2):
                    if name not in self._toxics:
                        break
                    name = f"{base}_{i}"
            elif name in self._toxics:
                raise ValueError(f"a fault named {name!r} is already on {self!r}; remove() it "
                                 "or update() it, or pick another name")
            entry = _ToxicEntry(name, fault, direction, float(probability))
            self._toxics[name] = entry
            for pair in list(self._pairs.values()):
                for d in entry.directions():
                    pair.add_stage(entry, d)
            return name

        return str(self._run(go))

    def update(self, name: str, **params: Any) -> Toxic:
        """Change parameters of fault ``name`` (``probability=`` too, for new connections);
        live connections use the new values from now on.  Returns the new fault object."""

        def go() -> Toxic:
            entry = self._entry(name)
            probability = params.pop("probability", None)
            new = entry.toxic.replace(**params) if params else entry.toxic
            if probability is not None:
                if not 0.0 <= probability <= 1.0:
                    raise ValueError(f"probability must be from 0 to 1, got {probability!r}")
                entry.probability = float(probability)
            entry.toxic = new
            for pair in list(self._pairs.values()):
                for stage in list(pair.stages_named(name)):
                    stage.toxic = new
                    stage.updated()
            return new

        return self._run(go)  # type: ignore[no-any-return]

    def remove(self, name: str) -> None:
        """Remove fault ``name``; bytes it was holding are passed on at once."""

        def go() -> None:
            self._entry(name)
            del self._toxics[name]
            for pair in list(self._pairs.values()):
                pair.remove_stages(name)

        self._run(go)

    def clear(self) -> None:
        """Remove every fault."""
        for name in list(self._toxics):
            self.remove(name)

    def toxics(self) -> list[ToxicInfo]:
        """The faults configured now, in the order they apply."""
        return [ToxicInfo(e.name, e.toxic, e.direction, e.probability)
                for e in list(self._toxics.values())]

    def _entry(self, name: str) -> _ToxicEntry:
        try:
            return self._toxics[name]
        except KeyError:
            known = ", ".join(self._toxics) or "none"
            raise KeyError(f"no fault named {name!r} on this proxy (configured: {known})") from None

    # -- down / up --------------------------------------------------------------------------
    def down(self, *, reset: bool = False) -> None:
        """Stop listening (new connections are refused) and cut every connection (with an RST
        if ``reset``), like disabling a toxiproxy proxy.  ``up()`` listens again."""

        def go() -> None:
            if self._down:
                return
            self._down = True
            listener = self._listener
            if listener is not None:
                listener.close()
                if self._unix_path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(self._unix_path)
            for pair in list(self._pairs.values()):
                if reset:
                    pair.reset("proxy down")
                else:
                    pair.cut("proxy down")

        self._run(go)

    def up(self) -> None:
        """Listen again on the same address after ``down()``."""
        from pytest_multiconn.core.address import bind_listener

        def go() -> None:
            if not self._down:
                return
            addr = self._address
            if isinstance(addr, str):
                sock = bind_listener(None, 0, unix_path=addr, backlog=self.backlog)
            else:
                sock = bind_listener(addr[0], addr[1], backlog=self.backlog,
                                     allow_remote=self.allow_remote)
            self._listener = _Listener(self, sock)
            self._listener.resume()
            self._down = False

        self._run(go)

    @property
    def is_down(self) -> bool:
        return self._down

    # -- step mode -------------------------------------------------------------------------------
    def hold(self) -> None:
        """Hold both directions of every connection, live and future, until released."""

        def go() -> None:
            self._hold_new = True
            for pair in list(self._pairs.values()):
                for d in DIRECTIONS:
                    pair.pipe(d).held = True

        self._run(go)

    def unhold(self) -> None:
        """Stop holding: deliver what is held and let every connection flow."""

        def go() -> None:
            self._hold_new = False
            for pair in list(self._pairs.values()):
                for d in DIRECTIONS:
                    pipe = pair.pipes[d]
                    if pipe is not None:
                        pipe.unhold()
                        pair.maybe_fast_path(d)

        self._run(go)

    def wait_for_connection(self, timeout: float | None = None) -> ProxiedConnection:
        """The next connection not yet returned by this method (in accept order), waiting for
        it to be accepted and connected to the target."""

        def ready() -> bool:
            head = self._unclaimed[0] if self._unclaimed else None
            return head is not None and (head.connected or head.done)

        self._wait(ready, timeout, "a connection through the proxy")
        pair = self._unclaimed.popleft()
        return ProxiedConnection(self, pair)

    def handles(self) -> list[ProxiedConnection]:
        """Handles on every live connection, oldest first."""
        return [ProxiedConnection(self, p) for p in self._run(lambda: list(self._pairs.values()))]

    def _wait(self, predicate: Callable[[], bool], timeout: float | None, what: str,
              progress: Callable[[], object] | None = None) -> Any:
        # predicate() runs under the condition the loop thread notifies through: it must only
        # read state (never run_sync, which would wait for the loop while the loop waits here).
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                while True:
                    if predicate():
                        return progress() if progress is not None else True
                    if self._loop is not None and self._loop.errors:
                        self.check()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(min(remaining, 0.5))
            finally:
                self._waiters -= 1
        state = f" (now: {progress()})" if progress is not None else ""
        raise WaitTimeout(f"{self!r}: timed out after {timeout}s waiting for {what}{state}\n"
                          f"{self.report(limit=4)}")

    # -- reports --------------------------------------------------------------------------------
    def report(self, limit: int = 16) -> str:
        """Every live and recently closed connection with its transcript (for failure reports)."""

        def build() -> str:
            pairs = [*self._recent_pairs, *self._pairs.values()][-limit:]
            lines = [repr(self)]
            for d_name, entry in self._toxics.items():
                lines.append(f"  fault {d_name}: {entry.toxic!r} direction={entry.direction} "
                             f"probability={entry.probability:g}")
            lines.append(f"  seed={self.seed}")
            for pair in pairs:
                lines.append(f"  {pair!r}")
                lines.append(pair.transcript.format("      "))
            return "\n".join(lines)

        if self._started and not self._stopped:
            try:
                return str(self.loop.run_sync(build, self.timeout))
            except Exception as exc:  # noqa: BLE001 - a report must not raise in a failing test
                return f"{self!r}: no report ({type(exc).__name__}: {exc})"
        return build()

    def connections(self) -> list[ConnectionInfo]:
        """Snapshots of the live connections (client side; the transcript covers both sides)."""
        return super().connections()

    # -- ServerBase hooks (loop thread) ------------------------------------------------------------
    def _may_accept(self) -> bool:
        return not self._down and super()._may_accept()

    def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
        pair = _Pair(self, next(self._numbers))
        upstream = socket.socket(self.target_family, socket.SOCK_STREAM)
        try:
            if self.target_family != socket.AF_UNIX:
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair.client = _Side(pair, "client", sock, addr)
            pair.server = _Side(pair, "server", upstream, self.target)
        except BaseException:
            upstream.close()
            raise
        pair.client.other = pair.server
        pair.server.other = pair.client
        self._pairs[pair.number] = pair
        self._unclaimed.append(pair)
        return pair.client

    def _pair_done(self, pair: _Pair) -> None:
        self._pairs.pop(pair.number, None)
        self._recent_pairs.append(pair)
        self._notify()

    def _connection_closed(self, conn: Connection) -> None:
        super()._connection_closed(conn)
        listener = self._listener
        if self._down and listener is not None and listener.registered:
            listener.pause()

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close every proxied connection and the listener, join the loop thread."""
        if self._started and not self._stopped and self.loop.is_running():
            # The loop closes only handlers registered with its selector at stop; a side that
            # is neither reading nor writing (end-of-stream received, held, paused) is not, so
            # close every pair here first.
            def cut_all() -> None:
                for pair in list(self._pairs.values()):
                    pair.cut("proxy stopped")

            self.loop.run_sync(cut_all, timeout)
        super().stop(timeout)
        self._unclaimed.clear()


__all__ = ["FaultProxy", "ProxiedConnection", "ProxyTranscript", "ToxicInfo"]
