"""The fault-injection suite for any request/response server, over real sockets.

The contracts, whatever the protocol (an :class:`~pytest_multiconn.exchanges.Exchange` says
what to send and what a right reply is):

* every reply complete and right, also when requests arrive in 1-byte sends with pauses and
  when N requests are pipelined in one write (N replies, in order);
* it serves connections concurrently: one silent connection does not block another;
* a slow reader, a never-reader and silent never-closers do not starve the others (a latency
  probe keeps running beside them);
* a client that pipelines requests and never reads does not make it buffer without bound (it
  stops reading, or closes that client: both are bounded defences);
* idle connections cost no CPU;
* resets, bursts, instant closes and garbage do not stop it serving everyone else;
* after a client's half-close it answers what it has, then closes (a contract where the
  protocol defines it, an observation elsewhere).

Each broken contract names the cause it saw: a serial server, a small listen backlog, a server
that keeps reading from a never-reader.  Rows run in three phases: the basic exchange and the
concurrency check first, then the independent checks at once, then the ones that must be
alone (CPU, listen-queue counters, resets).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pytest_multiconn.core.blocking import refuse_in_event_loop
from pytest_multiconn.core.seed import derive_seed
from pytest_multiconn.exchanges.base import Exchange, ReplyReader
from pytest_multiconn.exchanges.garbage import QUIET, answer_problem, classify_answer, garbage_bytes
from pytest_multiconn.exchanges.simple import Echo
from pytest_multiconn.suite.model import (
    FAIL,
    NA,
    NOTE,
    PASS,
    SuiteReport,
    SuiteRow,
)
from pytest_multiconn.suite.peers import (
    PeerError,
    Talk,
    burst,
    open_socket,
    read_replies,
    rst_close,
    talk,
)
from pytest_multiconn.suite.probes import (
    ExchangeProbe,
    cpu_seconds,
    listen_counters,
    listener_pid,
    preemptions,
    request_flow,
    rss_bytes,
    runnable_threads,
    scheduled_seconds,
    wanted_cpu_seconds,
)


@dataclass(frozen=True)
class SuiteLimits:
    """The bounds the suite holds a server to (generous: a loaded CI box must pass)."""

    #: Bytes of replies a server may hold in user space for one client that never reads
    #: (bounded servers hold about their high-water mark: 16 to 128 KiB).
    max_held: int = 512 * 1024
    #: Share of one CPU an idle server may use while its connections sit idle.
    max_idle_cpu: float = 0.25
    #: Preemptions of an idle server within the idle window (a spinner has dozens).
    max_idle_preemptions: int = 20
    #: Worst round trip another client may see while one misbehaves.
    max_probe_latency: float = 1.0
    #: Bound on each check's client work.
    timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_held", "max_idle_preemptions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_idle_cpu", "max_probe_latency", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 < value < float("inf")
            ):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")



class _Failed(Exception):
    """A check's verdict: the contract it broke, in words."""


class _Status(Exception):
    """A check that does not apply (n/a) or only observed (note)."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class _Context:
    address: Any
    exchange: Exchange
    seed: int
    limits: SuiteLimits
    pid: int | None
    tls: Any
    keep_alive: bool = True
    serial: bool = False
    connections: int = 0
    bytes: int = 0
    reply_size: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rng(self, label: str, *parts: object) -> random.Random:
        return random.Random(derive_seed(self.seed, label, *parts))

    def deadline(self) -> float:
        return time.monotonic() + self.limits.timeout

    def count(self, connections: int, nbytes: int) -> None:
        with self.lock:
            self.connections += connections
            self.bytes += nbytes

    def talk(self, label: str, i: int, count: int, how: str = "serial", **kwargs: Any) -> Talk:
        rng = self.rng(label, i)
        if not self.keep_alive:
            count = 1
        requests = self.exchange.requests(count, rng, kwargs.pop("size", None))
        result = talk(self.address, self.tls, self.exchange, requests, self.deadline(),
                      how=how, rng=rng, **kwargs)
        self.count(1, sum(len(r) for r in requests))
        return result

    def many(self, label: str, n: int, count: int, how: str = "serial", **kwargs: Any
             ) -> list[Talk]:
        with ThreadPoolExecutor(max_workers=min(n, 16), thread_name_prefix="multiconn-suite"
                                ) as pool:
            futures = [pool.submit(self.talk, label, i, count, how, **kwargs) for i in range(n)]
            return [f.result() for f in futures]

    def expect_ok(self, talks: Sequence[Talk], what: str) -> None:
        bad = [(i, t) for i, t in enumerate(talks) if t.problem is not None]
        if bad:
            i, first = bad[0]
            raise _Failed(f"{len(bad)}/{len(talks)} {what} failed; first (connection {i}): "
                          f"{first.problem}")

    def serial_cause(self) -> str:
        return (" (it serves one connection at a time: see the concurrency row)"
                if self.serial else "")


def _probe_ok(ctx: _Context, probe: ExchangeProbe, while_what: str) -> None:
    if probe.error is not None:
        raise _Failed(f"another client could not be served while {while_what}: {probe.error}"
                      f"{ctx.serial_cause()}")
    if not probe.trips:
        raise _Failed(f"another client got no reply at all while {while_what} (starved)"
                      f"{ctx.serial_cause()}")
    # Judged on the slowest trip less the time this process was not scheduled meanwhile (the
    # probe's hiccup meter): on a loaded machine a trip can wait a second for the CPU.
    if probe.worst_not_stalled() > ctx.limits.max_probe_latency:
        cause = ctx.serial_cause()
        if probe.waited_for_close():
            cause = (" : it serves one connection at a time (the probe's reply came only when "
                     "the other connection ended)")
        raise _Failed(
            f"another client was starved while {while_what}: a reply took "
            f"{probe.worst * 1e3:.0f} ms (limit {ctx.limits.max_probe_latency * 1e3:.0f} ms"
            f"{_stall_note(probe)})"
            f"{cause}"
        )


def _stall_note(probe: ExchangeProbe) -> str:
    stalled = probe.worst - probe.worst_not_stalled()
    return f"; {stalled * 1e3:.0f} ms of it this process was not scheduled" if stalled else ""


def _probe(ctx: _Context, label: str) -> ExchangeProbe:
    return ExchangeProbe(ctx.address, ctx.exchange, ctx.tls,
                         timeout=max(ctx.limits.max_probe_latency * 3, 2.0),
                         seed=derive_seed(ctx.seed, "probe", label))


# --- phase 1 ------------------------------------------------------------------------------


def _check_exchange(ctx: _Context) -> str:
    first = ctx.talk("exchange", 0, 3)
    if first.problem is not None:
        raise _Failed(f"a plain exchange failed: {first.problem}")
    ctx.keep_alive = first.keeps_open
    outcomes = first.reader.outcomes
    ctx.reply_size = sum(len(o.reply) for o in outcomes) / max(len(outcomes), 1)
    rest = ctx.many("exchange", 7, 3)
    ctx.expect_ok(rest, "plain connections")
    if not ctx.keep_alive:
        return ("every reply right; the server closes after each reply (one request per "
                "connection), so pipelining rows do not apply")
    return f"8 connections, 3 requests each, every reply right ({ctx.reply_size:.0f} B avg)"


def _check_concurrency(ctx: _Context) -> str:
    # A connection that connects and sends nothing must not block another one.
    with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as silent:
        ctx.count(1, 0)
        rng = ctx.rng("concurrency")
        requests = ctx.exchange.requests(1, rng, 32)
        reader = ReplyReader(ctx.exchange, requests)
        wait = max(ctx.limits.max_probe_latency, 1.0)
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as other:
            ctx.count(1, len(requests[0]))
            other.sendall(requests[0])
            try:
                read_replies(other, reader, time.monotonic() + wait)
                return "a silent connection did not block another one"
            except PeerError:
                pass
            silent.close()
            try:
                read_replies(other, reader, time.monotonic() + ctx.limits.timeout)
            except PeerError as exc:
                raise _Failed(f"a second connection got no reply, even after the first "
                              f"closed (it hangs): {exc}") from None
    ctx.serial = True
    raise _Failed(f"serves one connection at a time: a second connection got no reply for "
                  f"{wait:.1f} s while a silent one was open, and got it as soon as that one "
                  "closed")


# --- phase 2 (concurrent) ------------------------------------------------------------------


def _check_partial_send(ctx: _Context) -> str:
    one = ctx.many("partial-1", 4, 3, how="split", max_chunk=1, max_pause=0.001, size=48)
    try:
        ctx.expect_ok(one, "connections sending each request 1 byte per send()")
    except _Failed as exc:
        raise _Failed(f"replies wrong when requests arrive 1 byte at a time (a server that "
                      f"takes one recv() for one request does this): {exc}") from None
    paced = ctx.many("partial-paced", 2, 3, how="split", max_chunk=128, max_pause=0.002,
                     size=1024)
    ctx.expect_ok(paced, "connections sending 1..128 byte chunks with random pauses")
    return "every reply right with requests split into 1-byte and 1..128-byte sends"


def _check_pipelining(ctx: _Context) -> str:
    if not ctx.keep_alive:
        raise _Status(NA, "does not apply: the server closes after each reply")
    talks = ctx.many("pipelining", 4, 50, how="pipelined")
    ctx.expect_ok(talks, "connections pipelining 50 requests in one write")
    return "4 connections x 50 pipelined requests, replies complete and in order"


def _check_slow_reader(ctx: _Context) -> str:
    count = 400 if ctx.keep_alive else 1
    with _probe(ctx, "slow") as probe:
        talks = ctx.many("slow", 2, count, how="pipelined", rcvbuf=8192, rate=2 * 1024 * 1024,
                         size=512)
        probe.mark_close()
    ctx.expect_ok(talks, "slow readers (2 MiB/s)")
    _probe_ok(ctx, probe, "two clients read slowly")
    return f"other clients' worst reply {probe.worst * 1e3:.1f} ms"


def _request_batch(ctx: _Context, label: str, target: int) -> tuple[bytes, int]:
    rng = ctx.rng(label)
    one = ctx.exchange.requests(64, rng, 1024)
    chunk = b"".join(one)
    return chunk * max(1, target // len(chunk)), 64 * max(1, target // len(chunk))


def _never_reader(ctx: _Context, i: int, budget: float, results: list[dict[str, Any]]) -> None:
    """Pipeline requests on one connection and never read; record how it ended and the most
    the server held for it."""
    state: dict[str, Any] = {"sent": 0, "closed": None, "held": None, "stalled": False}
    results[i] = state
    flood = ctx.exchange.flood(ctx.rng("flood", i))
    try:
        sock = open_socket(ctx.address, ctx.tls, ctx.limits.timeout, rcvbuf=16 * 1024)
    except OSError as exc:
        state["closed"] = f"could not connect: {exc}"
        return
    ctx.count(1, 0)
    received = 0
    try:
        if flood is not None:
            # A bounded flood: FLOOD_REPLIES big replies in all, asked for with small requests.
            reader = ReplyReader(ctx.exchange, list(flood.setup))
            sock.sendall(b"".join(flood.setup))
            read_replies(sock, reader, ctx.deadline())
            received = reader.received
            batch = flood.request * (FLOOD_BYTES // len(flood.request))
            req_size, reply_size = float(len(flood.request)), float(flood.reply_size)
            allowance = FLOOD_READ_AHEAD
            state["sent"] = sum(map(len, flood.setup))
        else:
            batch, per_batch = _request_batch(ctx, f"never-read-{i}", 256 * 1024)
            req_size, reply_size = len(batch) / per_batch, ctx.reply_size
            allowance = 0
        _push(ctx, sock, state, batch, cycle=flood is None, budget=budget, received=received,
              req_size=req_size, reply_size=reply_size, allowance=allowance)
    except (OSError, PeerError) as exc:
        state["closed"] = f"{type(exc).__name__} after {state['sent']} B"
    finally:
        sock.close()


#: Bytes of small requests for big replies a flood sends at most (1 MiB of 22-byte GETs asks
#: for 47 MiB of 1 KiB values: enough to show a pile-up, not enough to hurt the machine).
FLOOD_BYTES = 1024 * 1024
#: Requests a bounded server may read ahead and not answer yet (its read buffer): a flood's
#: request bytes are tiny, so without this allowance reading one buffer ahead would count as
#: owing megabytes.
FLOOD_READ_AHEAD = 128 * 1024


def _push(  # noqa: PLR0912, PLR0915 - one bounded loop: send, measure, wait
    ctx: _Context, sock: socket.socket, state: dict[str, Any], batch: bytes, *,
          cycle: bool, budget: float, received: int, req_size: float, reply_size: float,
          allowance: int) -> None:
    deadline = time.monotonic() + budget
    base = state["sent"]
    view = memoryview(batch)
    sock.setblocking(False)
    # Stalled: less than STALL_BYTES taken in a STALL_WINDOW.  The kernel may trickle in a
    # few bytes as windows open (autotuning), so "no byte at all" is not the test.
    window_start, window_sent, measured, window_held = time.monotonic(), 0, 0.0, 0
    window_want = _wanted(ctx)
    half = window_start + budget / 2
    last_flow = None

    def measure() -> int | None:
        held = _held(ctx, sock, state["sent"], received, base + allowance, req_size,
                     reply_size)
        if held is not None:
            state["held"] = max(held, state["held"] or 0)
        return held

    extended = False
    for _ in range(1_000_000):
        now = time.monotonic()
        if now >= deadline:
            # No verdict yet (it neither stopped reading nor held more than the limit): on a
            # loaded machine the server, or these threads, may simply not have had the CPU
            # to show which it is.  Push on, once, for longer rather than call it bounded.
            if extended or not view or (state["held"] or 0) > ctx.limits.max_held:
                break
            extended = True
            deadline = now + budget * (NEVER_READ_EXTENSION - 1)
        if now - window_start >= _STALL_WINDOW:
            flow = request_flow(sock, state["sent"], received) if ctx.tls is None else None
            if not view and (flow is None or flow == last_flow):
                break  # a bounded flood, all sent, and the server did nothing more with it
            last_flow = flow
            held_now = state["held"] or 0
            want = _wanted(ctx)
            busy = (want is not None and window_want is not None
                    and (want - window_want) / (now - window_start) > _BUSY)
            # Stopped reading: it took (almost) nothing from us, what it holds did not grow
            # either (a server slowed down by its own pile-up still grows it), and it was not
            # busy on (or waiting for) a CPU all along: a starved spinner is not a stop.
            if (view and window_sent < _STALL_BYTES and held_now - window_held < _STALL_BYTES
                    and not busy):
                state["stalled"] = True
                break
            if now >= half and state.get("held_half") is None:
                state["held_half"] = held_now
            window_start, window_sent, window_held, window_want = now, 0, held_now, want
        sent = 0
        if view:
            try:
                sent = sock.send(view[: 256 * 1024])
            except (BlockingIOError, ssl_want_write()):
                sent = 0
            except OSError as exc:
                state["closed"] = f"{type(exc).__name__} after {state['sent']} B"
                break
            state["sent"] += sent
            window_sent += sent
            view = view[sent:]
            if not view and cycle:
                view = memoryview(batch)
        if now - measured >= _MEASURE_EVERY:
            measured = now
            held = measure()
            if held is not None and held > ctx.limits.max_held * 8:
                break  # plainly unbounded: no need to push on
        if sent:
            continue
        # The kernel takes no more for now (or all is sent): wait, bounded, until it takes
        # more or the server closes; a server that stopped reading lets the window run out.
        readable, _, _ = select.select([sock], [sock] if view else [], [], 0.05)
        if readable and _peer_closed(sock):
            state["closed"] = f"the server closed it after {state['sent']} B"
            break
    measure()
    if state["closed"] is None and _peer_closed(sock):
        state["closed"] = f"the server closed it after {state['sent']} B"


#: A never-reader counts as stopped when the server took less than this in a window.
_STALL_WINDOW = 0.2
_STALL_BYTES = 4096
#: How often a never-reader reads the kernel's queues (/proc/net/tcp is not cheap).
_MEASURE_EVERY = 0.02
#: The longest each never-reader pushes (it stops sooner: stalled, closed or plainly unbounded).
#: A server that reads without bound piles up replies once its kernel send buffer is full;
#: a bounded one then stops reading.  That buffer grows by autotuning to a few MB, at a few
#: MB/s, so either verdict takes a second or so.
NEVER_READ_BUDGET = 3.0
#: A never-reader that has no verdict at the end of its budget pushes on to this many budgets
#: in all (inside the suite's 10 s per-thread bound): a starved server or client then still
#: shows whether the server stops reading.
NEVER_READ_EXTENSION = 2.5


#: Growth of what a server holds, over the second half of a never-reader's push, that shows
#: it piles up (a bounded server stays near its high-water mark).
_GROWING = 64 * 1024
#: A server runnable more than this share of a stall window was busy, not stopped.
_BUSY = 0.5
#: The least share of a CPU a spinner gets even on a machine loaded 25-fold (2 cores, 50
#: runnable threads); an idle server that was runnable only while waiting for a turn uses
#: less.
_SPINNER_MIN_SHARE = 0.02


class _ServerTime(NamedTuple):
    """What ``_server_time()`` read: the wall clock, CPU and run-queue seconds from
    ``schedstat``, CPU seconds from ``/proc/<pid>/stat``, and threads runnable now."""

    wall: float
    run: float
    wait: float
    cpu: float
    runnable_now: int


def _server_time(ctx: _Context) -> _ServerTime | None:
    """How a server in another process has been scheduled so far, or None where it cannot be
    read."""
    pid = _other_process(ctx)
    if pid is None:
        return None
    times, cpu, now = scheduled_seconds(pid), cpu_seconds(pid), runnable_threads(pid)
    if times is None or cpu is None or now is None:
        return None
    return _ServerTime(time.monotonic(), times[0], times[1], cpu, now)


def _starved(before: _ServerTime | None, after: _ServerTime | None) -> str | None:
    """How a server was starved between two ``_server_time()`` readings, or None if it was
    not: under ``_SPINNER_MIN_SHARE`` of a CPU, yet runnable most of the time or still waiting
    for a CPU at the end (``runnable_threads``: the wait of a thread that never got its turn is
    not in ``schedstat`` yet).

    Its CPU is the larger of two readings: ``schedstat`` is exact but summed over the threads
    alive at the time (a thread that exits takes its share with it), ``/proc/<pid>/stat``
    keeps what exited threads used but counts in 10 ms ticks."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    wall = after.wall - before.wall
    share = max(after.run - before.run, after.cpu - before.cpu) / wall
    runnable = (after.run + after.wait - before.run - before.wait) / wall
    if share >= _SPINNER_MIN_SHARE or (runnable <= _BUSY and not after.runnable_now):
        return None
    waiting = (f", {after.runnable_now} thread(s) waiting for a CPU at the end"
               if after.runnable_now else "")
    return f"runnable {runnable:.0%} of {wall:.1f} s, {share:.1%} of a CPU{waiting}"


def _other_process(ctx: _Context) -> int | None:
    """The server's pid if it runs in another process, else None: how our own process is
    scheduled says nothing about the server, since our own threads are busy pushing."""
    if ctx.pid is None or ctx.pid == os.getpid():
        return None
    return ctx.pid


def _wanted(ctx: _Context) -> float | None:
    pid = _other_process(ctx)
    return None if pid is None else wanted_cpu_seconds(pid)


def ssl_want_write() -> type[BaseException]:
    import ssl

    return ssl.SSLWantWriteError


_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the server closed (FIN or RST), even with its replies unread in our buffer."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is not None:
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0]
        except OSError:
            return True
        return state in (_TCP_CLOSE, _TCP_CLOSE_WAIT)
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - ssl raises its own want-read errors
        return False
    return data == b""


def _held(  # noqa: PLR0917 - the terms of one formula
    ctx: _Context, sock: socket.socket, sent: int, received: int, base: int,
    req_size: float, reply_size: float,
) -> int | None:
    """Reply bytes the server holds in user space for ``sock``: the requests it consumed
    (after the first ``base`` bytes), in reply bytes, minus the reply bytes it handed to its
    kernel (after the first ``received``)."""
    if ctx.tls is not None:
        return None  # TLS records change every size: not measurable to the byte
    flow = request_flow(sock, sent, received)
    if flow is None:
        return None
    consumed, delivered = flow[0] - base, flow[1] - received
    if isinstance(ctx.exchange, Echo) or not reply_size:
        return max(consumed - delivered, 0)
    return max(int(consumed / req_size * reply_size) - delivered, 0)


def _check_never_read(ctx: _Context) -> str:
    n = 3
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    before_rss = rss_bytes(ctx.pid) if ctx.pid is not None else None
    before = _server_time(ctx)
    with _probe(ctx, "never-read") as probe:
        threads = [threading.Thread(target=_never_reader, args=(ctx, i, NEVER_READ_BUDGET, results),
                                    name="multiconn-never-read") for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(ctx.limits.timeout)
        probe.mark_close()
    after_rss = rss_bytes(ctx.pid) if ctx.pid is not None else None
    ctx.count(0, sum(r.get("sent", 0) for r in results))
    closed = [r for r in results if r.get("closed")]
    # A server that closes a never-reader has bounded what it holds for it: count it as a
    # defence, whatever it held before it closed.
    kept = [r for r in results if not r.get("closed")]
    held = [r["held"] for r in kept if r.get("held") is not None]
    sent = max((r.get("sent", 0) for r in results), default=0)
    worst = max(held, default=None)
    grown = (after_rss - before_rss) if before_rss is not None and after_rss is not None else None
    if worst is not None and worst > ctx.limits.max_held:
        raise _Failed(
            f"buffers without bound: it keeps reading from clients that never read and holds "
            f"their replies (up to {worst} B for one of {n}, limit {ctx.limits.max_held} B"
            + (f"; its memory grew {grown / 2**20:.1f} MiB" if grown and grown > 0 else "")
            + ")")
    growing = [r for r in kept if not r.get("stalled") and r.get("held_half") is not None
               and (r.get("held") or 0) - r["held_half"] > _GROWING]
    if growing:
        r = growing[0]
        raise _Failed(
            f"buffers without bound: it kept reading from clients that never read for the whole "
            f"check and what it holds for them kept growing ({r['held_half']} B, then "
            f"{r['held']} B)")
    still_sending = [r for r in kept if not r.get("stalled")]
    if worst is None and still_sending and sent > 64 * ctx.limits.max_held:
        raise _Failed(f"buffers without bound: a never-reading client could still send after "
                      f"{sent} B")
    starved = _starved(before, _server_time(ctx))
    if starved is not None and len(closed) < n:
        # Nothing above failed, but a server that had no CPU could not show whether it
        # stops reading: taking nothing from us is then no evidence of a bound (closing a
        # never-reader still is).
        raise _Status(NOTE, f"no verdict: the server was starved of CPU ({starved}), so it "
                      "could not show whether it stops reading; run the suite where it gets a "
                      "CPU")
    _probe_ok(ctx, probe, "clients never read")
    how = []
    if closed:
        how.append(f"closed {len(closed)} of {n} never-readers (a bounded defence)")
        if len(closed) == n:
            return f"closed all {n} never-readers (a bounded defence): {closed[0]['closed']}"
    stalled = sum(1 for r in results if r.get("stalled"))
    if stalled:
        how.append(f"stopped reading from {stalled} of {n}")
    shown = "not measurable here" if worst is None else f"at most {worst} B"
    return f"held {shown} per never-reader; {', '.join(how) or 'bounded'}"


def _check_half_close(ctx: _Context) -> str:
    if ctx.tls is not None:
        # Python's SSLSocket.shutdown() drops the TLS layer and unwrap() waits for the peer's
        # close_notify: a TLS half-close cannot be sent from here.
        raise _Status(NA, "does not apply over TLS here: a TLS half-close is a close_notify, "
                      "which Python's ssl cannot send without waiting for the server's")
    count = 1024 if ctx.keep_alive else 1
    rng = ctx.rng("half-close")
    requests = ctx.exchange.requests(count, rng, 1024)
    reader = ReplyReader(ctx.exchange, requests)
    ctx.count(1, sum(map(len, requests)))
    problem = None
    try:
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout, rcvbuf=16 * 1024) as sock:
            errors: list[str] = []

            def send_all() -> None:
                try:
                    sock.sendall(b"".join(requests))
                    sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    errors.append(f"{type(exc).__name__} while sending: {exc}")

            sender = threading.Thread(target=send_all, name="multiconn-half-close")
            sender.start()
            # Read slowly, so a server that reads without bound has taken everything (and our
            # EOF) while its replies still wait in its memory.
            try:
                read_replies(sock, reader, ctx.deadline(), rate=8 * 1024 * 1024)
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
    if problem is None:
        return f"all {count} replies, then EOF, after our half-close"
    if not ctx.exchange.half_close_defined:
        raise _Status(NOTE, f"after our half-close: {got} of {count} replies ({problem}); "
                      "half-close is not defined by this protocol")
    if got < count or "missing" in problem:
        raise _Failed(f"bytes lost on half-close: {problem}")
    raise _Failed(problem)


def _check_garbage(ctx: _Context) -> str:
    answers = ctx.exchange.garbage_answers()
    if not answers:
        raise _Status(NA, f"does not apply: the {ctx.exchange.name} exchange does not say what "
                      "a server may answer to garbage")
    rng = ctx.rng("garbage")
    if "echo" in answers:
        talks = ctx.many("garbage", 8, 1, size=64 * 1024)
        ctx.expect_ok(talks, "connections sending 64 KiB of random binary")
        return "every byte value echoed exactly"
    seen: list[str] = []
    for i in range(4):
        junk = garbage_bytes(rng, 4096)
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as sock:
            ctx.count(1, len(junk))
            try:
                sock.sendall(junk)
                sock.settimeout(QUIET if "nothing" in answers else ctx.limits.timeout / 2)
                first: bytes | None = sock.recv(4096)
            except TimeoutError:
                first = None
            except OSError:
                first = b""
        what = classify_answer(ctx.exchange, first)
        problem = answer_problem(ctx.exchange, what)
        if problem is not None:
            raise _Failed(f"{problem} (garbage {i})")
        seen.append(what)
    after = ctx.many("after-garbage", 4, 1)
    ctx.expect_ok(after, "connections after garbage")
    return f"answered garbage with {', '.join(sorted(set(seen)))}; kept serving"


def _check_connect_close(ctx: _Context) -> str:
    for _ in range(64):
        with contextlib.suppress(OSError):
            sock = open_socket(ctx.address, None, ctx.limits.timeout) if ctx.tls is None else (
                socket.create_connection(tuple(ctx.address[:2]), ctx.limits.timeout))
            sock.close()
    ctx.count(64, 0)
    after = ctx.many("after-connect-close", 4, 1)
    ctx.expect_ok(after, "connections after 64 instant closes")
    return "64 instant closes, then normal service"


# --- phase 3 (alone) -----------------------------------------------------------------------


#: The quiet window over which idle CPU is measured (a spinner on a loaded machine needs it
#: to show its preemptions; 0.3 s missed one under load).
IDLE_WINDOW = 0.5


def _quiet(seconds: float) -> None:
    # An Event nobody sets: a bounded wait that uses no CPU, which is what we measure.
    threading.Event().wait(seconds)


def _check_idle(ctx: _Context) -> str:  # noqa: PLR0912 - set-up, probe, measurement
    if ctx.serial:
        raise _Failed("32 idle connections would block it for good: it serves one connection "
                      "at a time (see the concurrency row)")
    socks: list[socket.socket] = []
    try:
        for _ in range(16):
            socks.append(open_socket(ctx.address, ctx.tls, ctx.limits.timeout))
        lingering = []
        for i in range(16):
            rng = ctx.rng("never-close", i)
            requests = ctx.exchange.requests(1, rng, 32)
            sock = open_socket(ctx.address, ctx.tls, ctx.limits.timeout)
            socks.append(sock)
            sock.sendall(requests[0])
            reader = ReplyReader(ctx.exchange, requests)
            lingering.append((sock, reader))
        for sock, reader in lingering:
            read_replies(sock, reader, ctx.deadline())
            if reader.first_problem():
                raise _Failed(f"a never-closing connection got a wrong reply: "
                              f"{reader.first_problem()}")
        ctx.count(32, 0)
        probe = ctx.many("idle-probe", 4, 1)
        ctx.expect_ok(probe, "connections made while 32 others sat idle")
        if ctx.pid is None:
            return "32 idle connections held; CPU not measurable here"
        pid = ctx.pid
        before_cpu, before_pre = cpu_seconds(pid), preemptions(pid)
        before_want = wanted_cpu_seconds(pid) if pid != os.getpid() else None
        before = time.monotonic()
        _quiet(IDLE_WINDOW)
        after_cpu, after_pre = cpu_seconds(pid), preemptions(pid)
        after_want = wanted_cpu_seconds(pid) if pid != os.getpid() else None
        wall = time.monotonic() - before
        if before_cpu is None or after_cpu is None:
            return "32 idle connections held; CPU not measurable here"
        share = (after_cpu - before_cpu) / wall
        preempted = 0
        if after_pre is not None and before_pre is not None:
            preempted = max(after_pre - before_pre, 0)
        wanted = None
        if before_want is not None and after_want is not None:
            wanted = (after_want - before_want) / wall
        # CPU share alone misses a spinner on a busy machine (it gets little CPU); being
        # runnable all the time (on a CPU or waiting for one), or preempted again and again,
        # means it always wanted more.  An idle loop is none of these.  But waiting counts
        # as runnable: on a machine loaded tenfold, a server that only wakes now and then
        # (a 0.5 s poll) waits long for each turn and was "runnable 26%" while using 0% of
        # a CPU, or was preempted 21 times in 0.5 s at 1% of a CPU; a spinner there still
        # gets its share of a CPU, so runnable time and preemptions count only with some
        # CPU used.
        spinning = share >= _SPINNER_MIN_SHARE and (
            (wanted is not None and wanted > ctx.limits.max_idle_cpu)
            or preempted >= ctx.limits.max_idle_preemptions)
        if share > ctx.limits.max_idle_cpu or spinning:
            shown = "" if wanted is None else f", runnable {wanted:.0%} of the time"
            raise _Failed(
                f"it spins: {share:.0%} of a CPU{shown} and preempted {preempted} times in "
                f"{wall * 1e3:.0f} ms with 32 idle connections open (limits "
                f"{ctx.limits.max_idle_cpu:.0%}, {ctx.limits.max_idle_preemptions}); a loop "
                "that always asks for EVENT_WRITE does this"
            )
        return f"32 idle connections cost {share:.1%} of a CPU, {preempted} preemptions"
    except (OSError, PeerError) as exc:
        raise _Failed(f"idle connections: {type(exc).__name__}: {exc}{ctx.serial_cause()}"
                      ) from None
    finally:
        for sock in socks:
            sock.close()


def _check_burst(ctx: _Context) -> str:
    if ctx.tls is not None or isinstance(ctx.address, str):
        n_tls = 32
        talks = ctx.many("burst", n_tls, 1)
        ctx.expect_ok(talks, f"connections of a {n_tls}-connection burst")
        return f"{n_tls} at once"
    n = 128
    before = listen_counters()
    result = burst(ctx.address, ctx.exchange, n, ctx.rng("burst"), timeout=2.5)
    after = listen_counters()
    ctx.count(n, 0)
    moved = {}
    if before is not None and after is not None:
        moved = {k: after[k] - before[k] for k in after if after[k] > before[k]}
    counters = ", ".join(f"{k} +{v}" for k, v in moved.items())
    backlog = bool(moved) and (result.slow_connects > 0 or result.connected < n)
    after_talks = ctx.many("after-burst", 4, 1)
    bad_after = [t.problem for t in after_talks if t.problem]
    if result.served == n:
        if backlog:
            raise _Status(NOTE, f"all {n} served, {result.slow_connects} only after a SYN retry:"
                          f" a full listen backlog ({counters}); listen() backlog is small")
        if bad_after:
            raise _Failed(f"served the burst, then failed: {bad_after[0]}")
        return f"{n} at once, all served"
    lost = n - result.served
    first = result.failed[0] if result.failed else ""
    if backlog:
        if bad_after:
            raise _Failed(f"lost {lost} of {n} burst connections to a full listen backlog "
                          f"({counters}) and then failed: {bad_after[0]}")
        raise _Status(NOTE, f"{lost} of {n} burst connections still waited on a full listen "
                      f"backlog after 2.5 s ({counters}): its listen() backlog is too small for "
                      f"a burst; it kept serving others")
    raise _Failed(f"{lost} of {n} burst connections were not served, and the kernel dropped "
                  f"none (it hangs under a burst){ctx.serial_cause()}; first: {first}")


def _check_reset(ctx: _Context) -> str:
    for at in ("before", "mid", "after"):
        for i in range(2):
            rng = ctx.rng("reset", at, i)
            (request,) = ctx.exchange.requests(1, rng, 1024)
            try:
                sock = open_socket(ctx.address, ctx.tls, ctx.limits.timeout)
            except OSError as exc:
                raise _Failed(f"could not connect for the RST {at} sending: {exc}") from None
            try:
                if at == "mid":
                    sock.sendall(request[: max(1, len(request) // 2)])
                elif at == "after":
                    sock.sendall(request)
            except OSError:
                pass
            finally:
                rst_close(sock)
            ctx.count(1, len(request))
    after = ctx.many("after-reset", 8, 1)
    ctx.expect_ok(after, "connections after 6 resets (before, mid-request, after sending)")
    return "kept serving after RSTs before, mid-request and after sending"


Check = Callable[[_Context], str]

#: The checks and their phases: (name, check, phase).
CHECKS: tuple[tuple[str, Check, int], ...] = (
    ("exchange", _check_exchange, 1),
    ("concurrency", _check_concurrency, 1),
    ("partial_send", _check_partial_send, 2),
    ("pipelining", _check_pipelining, 2),
    ("slow_reader", _check_slow_reader, 2),
    ("never_read", _check_never_read, 2),
    ("half_close", _check_half_close, 2),
    ("garbage", _check_garbage, 2),
    ("silent+never_close", _check_idle, 3),
    ("burst", _check_burst, 3),
    ("connect_close", _check_connect_close, 3),  # alone: it can fill a small backlog
    ("reset", _check_reset, 3),  # last: a server that dies on RST fails no row but this one
)

CHECK_NAMES = tuple(name for name, _, _ in CHECKS)


def _run_one(name: str, check: Check, ctx: _Context, started: float | None = None
             ) -> SuiteRow:
    sub = _Context(ctx.address, ctx.exchange, ctx.seed, ctx.limits, ctx.pid, ctx.tls,
                   keep_alive=ctx.keep_alive, serial=ctx.serial, reply_size=ctx.reply_size)
    started = time.monotonic()
    status = PASS
    try:
        detail = check(sub)
    except _Failed as exc:
        detail, status = str(exc), FAIL
    except _Status as exc:
        detail, status = str(exc), exc.status
    except (OSError, PeerError) as exc:
        detail, status = f"{type(exc).__name__}: {exc}{sub.serial_cause()}", FAIL
    # Findings of phase 1 carry over to the later phases.
    ctx.keep_alive, ctx.serial, ctx.reply_size = sub.keep_alive, sub.serial, sub.reply_size
    return SuiteRow(name, sub.connections, sub.bytes, status != FAIL,
                    time.monotonic() - started, detail, status)


def _dead(name: str) -> SuiteRow:
    return SuiteRow(name, 0, 0, False, 0.0, "not run: the server no longer accepts connections "
                    "(it died during an earlier check)", FAIL)


def _listening(address: Any, timeout: float) -> str | None:
    """None when something accepts connections at ``address``, else why not."""
    try:
        family = socket.AF_UNIX if isinstance(address, str) else (
            socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address if isinstance(address, str) else tuple(address[:2]))
    except ConnectionRefusedError:
        return "nothing listens there (connection refused)"
    except OSError as exc:
        return f"cannot connect: {type(exc).__name__}: {exc}"
    return None


def run_server_checks(  # noqa: PLR0912 - validation, then three phases
    address: Any,
    exchange: Exchange | None = None,
    *,
    seed: int = 0,
    tls: Any = None,
    pid: int | None = None,
    limits: SuiteLimits | None = None,
    only: Sequence[str] | None = None,
    stop_on_failure: bool = False,
    on_row: Callable[[SuiteRow], None] | None = None,
) -> SuiteReport:
    """Run the checks (all, or ``only`` those named) against the server at ``address``
    speaking ``exchange`` (default :class:`~pytest_multiconn.exchanges.Echo`); never raises
    for a broken contract, returns the :class:`SuiteReport`."""
    exchange = Echo() if exchange is None else exchange
    if not isinstance(exchange, Exchange):
        raise TypeError(f"exchange must be an Exchange (see pytest_multiconn.exchanges), "
                        f"got {exchange!r}")
    names = CHECK_NAMES if only is None else tuple(only)
    unknown = [n for n in names if n not in CHECK_NAMES]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; choose from {', '.join(CHECK_NAMES)}")
    limits = limits or SuiteLimits()
    context = _client_context(tls, address)
    if pid is None:
        pid = listener_pid(address)
    report = SuiteReport(address, seed, pid=pid, protocol=exchange.name)
    ctx = _Context(address, exchange, seed, limits, pid, context)

    def emit(row: SuiteRow) -> None:
        report.rows.append(row)
        if on_row is not None:
            on_row(row)

    down = _listening(address, limits.timeout)
    if down is not None:
        emit(SuiteRow("connect", 0, 0, False, 0.0, down, FAIL))
        return report
    # Phase 1 always runs what later phases need to know (keep-alive, reply size, serial).
    wanted = set(names)
    for phase in (1, 2, 3):
        batch = [(n, c) for n, c, p in CHECKS if p == phase and (n in wanted or (
            phase == 1 and n == "exchange"))]
        if not batch:
            continue
        concurrent = phase == 2 and not ctx.serial and not stop_on_failure  # noqa: PLR2004
        if concurrent and len(batch) > 1:
            if _listening(address, limits.timeout) is not None:
                rows = [_dead(n) for n, _ in batch]
            else:
                with ThreadPoolExecutor(max_workers=len(batch),
                                        thread_name_prefix="multiconn-check") as pool:
                    futures = [(n, pool.submit(_run_one, n, c, ctx)) for n, c in batch]
                    rows = [f.result() for _, f in futures]
        else:
            rows = []
            for n, c in batch:
                dead = phase > 1 and _listening(address, limits.timeout) is not None
                rows.append(_dead(n) if dead else _run_one(n, c, ctx))
                if stop_on_failure and not rows[-1].passed and rows[-1].fault in wanted:
                    break
        for row in rows:
            if row.fault in wanted:
                emit(row)
        if stop_on_failure and report.failures:
            break
    return report


def _client_context(tls: Any, address: Any) -> Any:
    if tls is None:
        return None
    from pytest_multiconn.tls.config import client_tls

    return client_tls(tls, address).context


def check_server(address: Any, exchange: Exchange | None = None, **kwargs: Any) -> SuiteReport:
    """Run every check against the server at ``address`` speaking ``exchange``; raise
    :class:`ContractBreak` naming every broken contract, else return the report."""
    refuse_in_event_loop("check_server()", "await acheck_server(...)")
    report = run_server_checks(address, exchange, **kwargs)
    report.raise_for_failures()
    return report
