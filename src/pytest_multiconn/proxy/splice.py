"""The zero-copy relay: a fault-free bulk direction moved inside the kernel (:class:`Splice`).

The essay above :class:`Splice` says why, what it costs, and how a direction leaves it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from typing import Protocol

from pytest_multiconn.proxy.side import PAUSE_SPLICE_FULL, Side

#: os.splice where the platform has it (Linux); None elsewhere, and the relay stays in user
#: space.  Read at each call, so a test can replace it.
SPLICE: Callable[..., int] | None = getattr(os, "splice", None)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ / F_GETPIPE_SZ (Linux), named in fcntl from 3.10
_F_GETPIPE_SZ = 1032
_SPLICE_PIPE_SIZE = 256 * 1024
# A kernel, sandbox or socket type that cannot splice says so with one of these: stay in user space.
_SPLICE_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def splice_available() -> bool:
    """True where the kernel relay may be tried (it can still turn out unsupported)."""
    return SPLICE is not None


def _splice(src: int, dst: int, count: int, *, flags: int) -> int:
    fn = SPLICE
    if fn is None:  # only reached if SPLICE was taken away while a pipe was open
        raise OSError(errno.ENOSYS, "splice is not available")
    return fn(src, dst, count, flags=flags)


class SplicePair(Protocol):
    """What a kernel pipe asks of the proxied connection it belongs to."""

    def unsplice(self, splice: Splice) -> None: ...

    def splice_eof(self, splice: Splice) -> None: ...

    def splice_unsupported(self, splice: Splice) -> None: ...


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
# (more than SPLICE_AFTER bytes moved and a read of SPLICE_BULK_READ or more, in side.py), and only
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
class Splice:
    """One direction relayed inside the kernel: source socket -> pipe -> destination socket.

    ``pending`` counts the bytes sitting in the pipe (loop thread only).
    """

    __slots__ = ("dst", "eof", "moved", "pair", "pending", "r", "size", "src", "w")

    def __init__(self, pair: SplicePair, src: Side, r: int, w: int, size: int) -> None:
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
        return (f"<Splice {self.src.direction} pipe={self.r},{self.w} size={self.size} "
                f"pending={self.pending} moved={self.moved}{' eof' if self.eof else ''}>")

    def pull(self) -> None:
        """The source is readable: move what it has into the pipe, then on to the destination."""
        src = self.src
        room = self.size - self.pending
        if room <= 0:
            src.pause_for(PAUSE_SPLICE_FULL)
            return
        try:
            n = _splice(src.fd, self.w, room, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            if self.pending:
                # The pipe has no free slot (a slot can hold less than a page, so this may
                # come before `size` bytes): wait for the destination to take some.
                src.pause_for(PAUSE_SPLICE_FULL)
            return
        except OSError as exc:
            if exc.errno in _SPLICE_UNSUPPORTED:
                self.pair.splice_unsupported(self)
                return
            src.peer_failed(exc)
            return
        if not n:
            self.eof = True
            if self.pending:
                src.pause_for(PAUSE_SPLICE_FULL)  # forwarded when the pipe is empty
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
                n = _splice(self.r, dst.fd, pending, flags=_SPLICE_FLAGS)
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
                self.pair.splice_unsupported(self)
                return
            dst.peer_failed(exc)
            return
        self.pending = pending
        if pending:
            if not dst.wants_write:
                dst.update_interest()
            return
        if dst.wants_write or dst.finish_pending:
            dst.flush_output()  # drop EVENT_WRITE; close now if a finish() was waiting
            if self.r < 0:  # that closed the destination, and the pair tore us down
                return
        if self.eof:
            self.pair.splice_eof(self)
        elif self.src.pause_bits & PAUSE_SPLICE_FULL:
            self.src.resume_for(PAUSE_SPLICE_FULL)

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


def make_pipe() -> tuple[int, int, int] | None:
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


__all__ = ["SPLICE", "Splice", "SplicePair", "make_pipe", "splice_available"]
