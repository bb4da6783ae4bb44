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

import math
import socket
import threading
import time

from pytest_multiconn.exchanges.base import ReplyReader
from pytest_multiconn.suite.context import Context, Failed, Status
from pytest_multiconn.suite.model import NA, NOTE
from pytest_multiconn.suite.peers import PeerError, open_socket, read_replies
from pytest_multiconn.suite.probes import peer_queues

NAME = "half_close"

#: Our receive buffer while we do not read.
RCVBUF = 16 * 1024
#: The most requests one half-close sends (a protocol with tiny replies would need millions).
MAX_REQUESTS = 200_000
#: A sender that made no progress for this long has met the server's flow control.
STALL = 0.3
#: How long, after the server read everything, it has to act on our FIN before we read.
FIN_GRACE = 0.3


def _largest_send_buffer() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


def _requests(ctx: Context) -> list[bytes]:
    rng = ctx.rng("half-close")
    if not ctx.keep_alive:
        return ctx.exchange.requests(1, rng, 1024)
    target = 2 * _largest_send_buffer() + 1024 * 1024
    flood = ctx.exchange.flood(rng)
    if flood is not None:
        count = min(math.ceil(target / max(flood.reply_size, 1)), MAX_REQUESTS)
        return [*flood.setup, *[flood.request] * count]
    # The size of one reply: the exchange's own answer where it knows it (an echo gives back
    # a 1 KiB request), else what the exchange row measured.
    sample = ctx.exchange.requests(1, rng, 1024)[0]
    expected = ctx.exchange.expected(sample)
    size = float(len(expected)) if expected else max(ctx.reply_size, 1.0)
    count = min(math.ceil(target / size), MAX_REQUESTS)
    return ctx.exchange.requests(count, rng, 1024)


def check(ctx: Context) -> str:  # noqa: PLR0912, PLR0915 - send, wait, read, judge
    if ctx.tls is not None:
        # Python's SSLSocket.shutdown() drops the TLS layer and unwrap() waits for the peer's
        # close_notify: a TLS half-close cannot be sent from here.
        raise Status(NA, "does not apply over TLS here: a TLS half-close is a close_notify, "
                     "which Python's ssl cannot send without waiting for the server's")
    requests = _requests(ctx)
    count = len(requests)
    payload = b"".join(requests)
    reader = ReplyReader(ctx.exchange, requests)
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
                _wait_consumed(sock, deadline)
                ctx.record.note("the server read everything we sent")
            try:
                read_replies(sock, reader, ctx.deadline())
                if reader.complete and reader.closed_after is None:
                    sock.settimeout(max(ctx.deadline() - time.monotonic(), 0.01))
                    if sock.recv(1) != b"":
                        problem = "sent more than the replies after our half-close"
            except PeerError as exc:
                problem = str(exc)
            except TimeoutError:
                problem = "answered, but never closed the connection after our half-close"
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


def _wait_consumed(sock: socket.socket, deadline: float) -> None:
    """Wait, bounded, until the server has read every byte we sent (its receive queue is
    empty), then give it FIN_GRACE to act on our FIN (or until it closes)."""
    for _ in range(100_000):
        queues = peer_queues(sock)
        if queues is None or queues[0] == 0 or time.monotonic() >= deadline:
            break
        time.sleep(0.005)  # a bounded poll of the kernel's queue
    end = min(time.monotonic() + FIN_GRACE, deadline)
    tcp_info = getattr(socket, "TCP_INFO", None)
    while time.monotonic() < end:
        if tcp_info is not None:
            state = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0]
            if state not in _OPEN:
                return  # the server closed (its FIN or RST came)
        time.sleep(0.01)  # a bounded poll of the connection's state
