"""``half_close``: after the client's half-close (``shutdown(SHUT_WR)``) the server answers
everything it has, then closes.

Made certain, not left to timing: the client asks for more reply bytes than the kernel can
hold for it (twice the largest TCP send buffer, ``tcp_wmem``, plus our small receive buffer),
sends every request and its FIN *without reading*, and waits until the server has read them
all (its receive queue is empty) and had a moment to act on the FIN.  A server that closes at
EOF with replies still in its own memory has then lost them every time, and the row fails
every run; one that stops reading when its replies back up (flow control) is read from until
it finishes.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from typing import Any

from pytest_multiconn.exchanges.base import Exchange, Flood, ReplyReader
from pytest_multiconn.suite.context import Context, Failed, Status
from pytest_multiconn.suite.model import NA, NOTE
from pytest_multiconn.suite.peers import PeerError, open_socket, read_replies
from pytest_multiconn.suite.probes import peer_queues, runnable_threads, scheduled_seconds

NAME = "half_close"

#: Our receive buffer while we do not read.  At least two loopback segments (64 KiB MSS): a
#: smaller one makes Linux hold back the window update when we start reading (silly-window
#: avoidance), and the server's kernel then waits on zero-window probes, backing off past a
#: second: a good server looked hung (seen with 16 KiB).  The server's own send buffer, not
#: ours, is what the loss needs to overflow.
RCVBUF = 256 * 1024
#: The most requests one half-close sends.  Echo and line replies (1 KiB, the protocols whose
#: contract half-close is) stay well under it; a protocol with tiny replies (HTTP's ~150 B)
#: would need 60,000 requests to pass twice the send buffer, and nginx then reset one run
#: in five after 34,000 replies while 55,000 measured clean by hand: past what the row can
#: hold to a verdict (for HTTP it is only an observation), so it stops at 20,000.
MAX_REQUESTS = 20_000
#: A sender that made no progress for this long has met the server's flow control.
STALL = 0.3
#: How long, after the server read everything, it has to act on our FIN before we read.
FIN_GRACE = 0.3
#: The fewest requests a half-close sends on a keep-alive connection.
MIN_REQUESTS = 256
#: The calibration: requests pipelined (at most), reply bytes (at most), its time bound.
CALIBRATION = 512
CALIBRATION_BYTES = 64 * 1024
CALIBRATION_SECONDS = 1.0
#: The work the half-close asks for, in seconds of the calibrated rate.
WORK_SECONDS = 1.5
#: No byte for this long while the server's processes were idle (not running, not waiting
#: for a CPU) is a server that will send nothing more: it hangs.
QUIET = 0.5
#: Consecutive idle QUIET windows that make a hang (one could be a scheduling accident).
IDLE_WINDOWS = 2
#: Below this share of a CPU (running or waiting for one) over QUIET the server is idle.
IDLE_SHARE = 0.05


def _largest_send_buffer() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


class _FloodReplies(Exchange):
    """The exchange, judging the flood's replies by their size (a flood's request is a GET of
    a value the exchange's own ``expected`` does not know)."""

    def __init__(self, inner: Exchange, flood: Flood) -> None:
        self.inner = inner
        self.spec = flood

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        return self.inner.frame(request, buf, eof)

    def expected(self, request: bytes) -> bytes | None:
        return None if request == self.spec.request else self.inner.expected(request)

    def check(self, request: bytes, reply: bytes) -> str | None:
        if request != self.spec.request:
            return self.inner.check(request, reply)
        if len(reply) != self.spec.reply_size:
            return (f"a reply of {len(reply)} B to the flood's request, not "
                    f"{self.spec.reply_size} B: {reply[:60]!r}")
        return None

    def early_problem(self, request: bytes, partial: bytes) -> str | None:
        if request == self.spec.request:
            return None
        return self.inner.early_problem(request, partial)

    def keeps_open(self, request: bytes, reply: bytes) -> bool:
        return self.inner.keeps_open(request, reply)


def _reply_size(ctx: Context, request: bytes) -> float:
    """The size of the reply to ``request``: exact where the exchange knows it, else the
    average the exchange row measured."""
    want = ctx.exchange.expected(request)
    if want is not None:
        return float(len(want))
    return max(ctx.reply_size, 1.0)


def _calibrate(ctx: Context, exchange: Exchange, setup: list[bytes], request: bytes,
               reply_size: float) -> tuple[float, float]:
    """(requests per second, seconds) the server and this client together get through when
    up to :data:`CALIBRATION` requests are pipelined on one connection and read at full
    speed (what came within :data:`CALIBRATION_SECONDS` when not all did): what bounds the
    half-close's work to the row's time."""
    count = max(1, min(CALIBRATION, int(CALIBRATION_BYTES // max(reply_size, 1.0))))
    requests = [*setup, *[request] * count]
    reader = ReplyReader(exchange, requests)
    started = time.monotonic()
    with contextlib.suppress(OSError, PeerError), open_socket(
            ctx.address, ctx.tls, ctx.limits.timeout) as sock:
        started = time.monotonic()
        sock.sendall(b"".join(requests))
        read_replies(sock, reader, started + CALIBRATION_SECONDS)
    took = max(time.monotonic() - started, 1e-6)
    ctx.count(1, sum(map(len, requests)))
    return len(reader.outcomes) / took, took


def _requests(ctx: Context) -> tuple[list[bytes], Exchange]:
    """The requests of the half-close, and the exchange that judges their replies.

    As many as make replies past twice the largest send buffer (the kernel cannot hold
    them: a server that closes at EOF with replies in its memory loses them every time),
    but no more than the server, with this client reading, gets through in
    :data:`WORK_SECONDS` (measured first, :func:`_calibrate`): a slow server's row stays
    bounded, and it is still busy with our requests when our FIN comes."""
    rng = ctx.rng("half-close")
    if not ctx.keep_alive:
        return ctx.exchange.requests(1, rng, 1024), ctx.exchange
    target = 2 * _largest_send_buffer() + 1024 * 1024
    flood = ctx.exchange.flood(rng)
    exchange: Exchange = ctx.exchange
    if flood is not None:
        exchange = _FloodReplies(ctx.exchange, flood)
        setup, request, size = list(flood.setup), flood.request, float(flood.reply_size)
    else:
        setup = []
        (request,) = ctx.exchange.requests(1, rng, 1024)
        size = _reply_size(ctx, request)
    count = min(math.ceil(target / size), MAX_REQUESTS)
    rate, took = _calibrate(ctx, exchange, setup, request, size)
    ctx.record.measure(calibration_requests_per_second=round(rate),
                       calibration_seconds=round(took, 4))
    count = min(count, max(math.ceil(rate * WORK_SECONDS), MIN_REQUESTS))
    if flood is not None:
        return [*setup, *[request] * count], exchange
    return [*setup, *ctx.exchange.requests(count, rng, 1024)], exchange


def check(ctx: Context) -> str:  # noqa: PLR0912, PLR0915 - send, wait, read, judge
    if ctx.tls is not None:
        # Python's SSLSocket.shutdown() drops the TLS layer and unwrap() waits for the peer's
        # close_notify: a TLS half-close cannot be sent from here.
        raise Status(NA, "does not apply over TLS here: a TLS half-close is a close_notify, "
                     "which Python's ssl cannot send without waiting for the server's")
    requests, judge = _requests(ctx)
    count = len(requests)
    payload = b"".join(requests)
    reader = ReplyReader(judge, requests)
    ctx.count(1, len(payload))
    problem = None
    progress = [0]
    errors: list[str] = []
    done = threading.Event()
    try:
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout, rcvbuf=RCVBUF) as sock:
            def send_all() -> None:
                try:
                    view = memoryview(payload)
                    while view:
                        n = sock.send(view[: 64 * 1024])
                        progress[0] += n
                        view = view[n:]
                    sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    errors.append(f"{type(exc).__name__} while sending: {exc}")
                finally:
                    done.set()

            sock.settimeout(ctx.limits.timeout)
            sender = threading.Thread(target=send_all, name="multiconn-half-close")
            sender.start()
            # Do not read until everything (and the FIN) is sent, or the server stopped
            # taking bytes (its flow control: then reading is what lets it go on).
            last, last_move = 0, time.monotonic()
            deadline = ctx.deadline()
            while not done.wait(0.02) and time.monotonic() < deadline:
                if progress[0] != last:
                    last, last_move = progress[0], time.monotonic()
                elif time.monotonic() - last_move > STALL:
                    break
            blocked = not done.is_set()
            ctx.record.note(f"sent {progress[0]} of {len(payload)} B ({count} requests) "
                            + ("then the server stopped taking more (flow control)" if blocked
                               else "and our FIN, without reading"))
            if not blocked:
                if _wait_consumed(sock, deadline):
                    ctx.record.note("the server read everything we sent")
                else:
                    ctx.record.note("the server stopped reading what we sent")
            problem = _read_to_eof(ctx, sock, reader)
            if problem is None and reader.complete and reader.closed_after is None:
                problem = _expect_eof(ctx, sock)
            if sender.is_alive():
                # Still blocked sending to a server that stopped reading: wake it.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sender.join(ctx.limits.timeout)
            if errors and problem is None and not reader.complete:
                problem = errors[0]
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        problem = reader.first_problem()
    got = len(reader.outcomes)
    if reader.closed_after is not None:
        # The server said it would close after this reply (HTTP's Connection: close, say):
        # the requests after it expect nothing.
        count = reader.closed_after + 1
        if got >= count and all(o.ok for o in reader.outcomes[:count]):
            problem = None
    ctx.record.measure(requests=len(requests), replies=got, bytes_received=reader.received,
                       reply_bytes_wanted=len(payload))
    ctx.record.note(f"received {reader.received} B: {got} replies"
                    + (f", then it said it would close after reply {reader.closed_after}"
                       if reader.closed_after is not None else ""))
    if problem is None:
        if reader.closed_after is not None and reader.closed_after + 1 < len(requests):
            return (f"answered {count} requests and closed as it said it would (after reply "
                    f"{reader.closed_after}), after our half-close")
        return f"all {count} replies, then EOF, after our half-close"
    if not ctx.exchange.half_close_defined:
        raise Status(NOTE, f"after our half-close: {got} of {count} replies ({problem}); "
                     "half-close is not defined by this protocol")
    if got < count or "missing" in problem:
        raise Failed(f"bytes lost on half-close: {problem}")
    raise Failed(problem)


#: TCP states in which the server has not closed yet: ESTABLISHED, FIN_WAIT1, FIN_WAIT2.
_OPEN = (1, 4, 5)


def _wait_consumed(sock: socket.socket, deadline: float) -> bool:
    """Wait, bounded, until the server has read every byte we sent (its receive queue is
    empty: True), or it stopped reading (the queue did not shrink for STALL: False), then
    give it FIN_GRACE to act on our FIN (or until it closes)."""
    consumed = True
    last, last_move = None, time.monotonic()
    for _ in range(100_000):
        queues = peer_queues(sock)
        if queues is None or queues[0] == 0 or time.monotonic() >= deadline:
            break
        if queues[0] != last:
            last, last_move = queues[0], time.monotonic()
        elif time.monotonic() - last_move > STALL:
            consumed = False
            break
        time.sleep(0.005)  # a bounded poll of the kernel's queue
    end = min(time.monotonic() + FIN_GRACE, deadline)
    tcp_info = getattr(socket, "TCP_INFO", None)
    while time.monotonic() < end:
        if tcp_info is not None:
            state = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0]
            if state not in _OPEN:
                return consumed  # the server closed (its FIN or RST came)
        time.sleep(0.01)  # a bounded poll of the connection's state
    return consumed


def _busy(ctx: Context) -> tuple[float, int] | None:
    """(seconds the server's threads ran or waited for a CPU so far, threads runnable now),
    or None when its processes cannot be seen apart from ours."""
    if not ctx.tree.visible or ctx.tree.own:
        return None
    pids = [p for p in ctx.tree.pids() if p != os.getpid()]
    wanted, runnable, seen = 0.0, 0, False
    for pid in pids:
        times, now = scheduled_seconds(pid), runnable_threads(pid)
        if times is None or now is None:
            continue
        wanted, runnable, seen = wanted + times[0] + times[1], runnable + now, True
    return (wanted, runnable) if seen else None


def _idle_since(ctx: Context, before: tuple[float, int] | None, seconds: float
                ) -> str | None:
    """How the server was idle over the last ``seconds`` (None: busy, or cannot be seen)."""
    after = _busy(ctx)
    if before is None or after is None or seconds <= 0:
        return None
    share = max(after[0] - before[0], 0.0) / seconds
    if share >= IDLE_SHARE or after[1]:
        return None
    return f"its processes used {share:.1%} of a CPU meanwhile, none runnable"


def _read_to_eof(ctx: Context, sock: socket.socket, reader: ReplyReader) -> str | None:
    """Read every reply (bounded by the row's deadline); stop early, with why, when no byte
    came for QUIET while the server's processes were idle: it will send nothing more."""
    deadline = ctx.deadline()
    idle_windows = 0
    for _ in range(10_000_000):
        if reader.complete or reader.closed_after is not None:
            return None
        before, began = _busy(ctx), time.monotonic()
        remaining = deadline - began
        if remaining <= 0:
            return _missing(reader, "within the time limit")
        sock.settimeout(min(QUIET, remaining))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            idle = _idle_since(ctx, before, time.monotonic() - began)
            idle_windows = idle_windows + 1 if idle is not None else 0
            if idle is not None and idle_windows >= IDLE_WINDOWS:
                return _missing(reader, f"then nothing for {QUIET * IDLE_WINDOWS:.1f} s and "
                                f"no close while the server sat idle ({idle}): it hangs")
            continue
        except OSError as exc:
            reader.eof()
            return f"{type(exc).__name__} after {reader.received} B: " + (
                reader.first_problem() or str(exc))
        if not chunk:
            reader.eof()
            return reader.first_problem()
        idle_windows = 0
        reader.feed(chunk)
    return None  # pragma: no cover - the deadline ends the loop first


def _missing(reader: ReplyReader, why: str) -> str:
    done = len(reader.outcomes)
    return (f"no complete reply {done} {why} (got {done} of {len(reader.requests)} replies, "
            f"{len(reader.buffer)} B of the next)")


def _expect_eof(ctx: Context, sock: socket.socket) -> str | None:
    """After the last reply: the close (None), or why not."""
    deadline = ctx.deadline()
    for _ in range(10_000_000):
        before, began = _busy(ctx), time.monotonic()
        remaining = deadline - began
        if remaining <= 0:
            break
        sock.settimeout(min(QUIET, remaining))
        try:
            data = sock.recv(1)
        except TimeoutError:
            idle = _idle_since(ctx, before, time.monotonic() - began)
            if idle is not None:
                return ("answered, but never closed the connection after our half-close "
                        f"({idle})")
            continue
        except OSError:
            return None  # reset after the last reply: nothing was lost
        return None if data == b"" else "sent more than the replies after our half-close"
    return "answered, but never closed the connection after our half-close"
