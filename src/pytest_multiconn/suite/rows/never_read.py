"""``never_read``: clients that pipeline requests and never read do not make the server
buffer without bound, and do not starve another client.

Measured, not inferred: the server tree's memory is sampled while three never-readers push
(at most ``limits.offered`` bytes in all, or a few seconds).  Buffering without bound is
memory that grew past ``limits.max_growth`` and was still growing at the end.  Every bounded
defence passes, whatever the bytes say: stopping reading (flow control), closing or
resetting the client, or reading and discarding (nginx after ``keepalive_requests``).  Where
the server's memory cannot be seen, the row says so and does not guess.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from pytest_multiconn.exchanges.base import ReplyReader
from pytest_multiconn.suite.context import Context, Failed, Status
from pytest_multiconn.suite.model import NOTE
from pytest_multiconn.suite.peers import PeerError, open_socket, read_replies
from pytest_multiconn.suite.probes import (
    ExchangeProbe,
    cpu_seconds,
    request_flow,
    runnable_threads,
    scheduled_seconds,
    server_read,
)

NAME = "never_read"

#: Never-reader connections.
READERS = 3
#: The longest the never-readers push (they stop sooner: stalled, closed, all offered, or
#: plainly unbounded).
BUDGET = 2.5
#: The longest the push goes on when the memory is still rising at the end of BUDGET.
BUDGET_MAX = 6.0
#: Growth over the last half second that counts as still rising.
RISING = 1024 * 1024
#: Growth that, matching what the server read and still rising, shows it keeps what it reads.
MIN_HOLD = 8 * 1024 * 1024
#: Bytes of small requests for big replies one never-reader sends at most (1 MiB of 22-byte
#: GETs asks for 47 MiB of 1 KiB values: enough to show a pile-up, not to hurt the machine).
FLOOD_BYTES = 1024 * 1024
#: A never-reader counts as stopped when the server took less than this in a window.
STALL_WINDOW = 0.25
STALL_BYTES = 4096
#: After the push, how long the row keeps sampling to see whether memory still rises (a
#: server works through requests it already read).
AFTER_PUSH = 0.3
#: The longest the row keeps watching after the push while the server still reads or grows.
AFTER_PUSH_MAX = 3.0
#: Memory that rises less than this in a sampling window counts as quiet.
WATCH_QUIET_BYTES = 256 * 1024
#: Stalled windows in a row that count as stopped reading for a server in our own process
#: (one for a server in another: its scheduling shows whether it could run).
OWN_PROCESS_WINDOWS = 4
#: A server runnable more than this share of a stall window was busy, not stopped.
BUSY = 0.5
#: See rows/idle.py: the least share of a CPU a spinner gets on a loaded machine.
MIN_SHARE = 0.02


@dataclass
class _Reader:
    index: int
    sent: int = 0
    closed: str | None = None
    stalled: bool = False
    all_sent: bool = False
    #: Kept open until the row's verdict: closing it would let the server free what it holds.
    sock: socket.socket | None = None
    #: Bytes of ours the server had read (not just let its kernel queue) at the end.
    consumed: int | None = None
    #: Set on the first reader only: how long the push took, and whether it ended early.
    pushed_for: float = 0.0
    ended_early: bool = False
    #: Watcher readings of the server tree, and how many found a thread runnable.
    readings: int = 0
    runnable_readings: int = 0


def _pusher(ctx: Context, state: _Reader, per_reader: int, stop: threading.Event,
            deadline: list[float]) -> None:
    flood = ctx.exchange.flood(ctx.rng("flood", state.index))
    try:
        sock = open_socket(ctx.address, ctx.tls, ctx.limits.timeout, rcvbuf=16 * 1024)
    except OSError as exc:
        state.closed = f"could not connect: {exc}"
        return
    ctx.count(1, 0)
    state.sock = sock
    try:
        if flood is not None:
            reader = ReplyReader(ctx.exchange, list(flood.setup))
            sock.sendall(b"".join(flood.setup))
            read_replies(sock, reader, ctx.deadline())
            state.sent = sum(map(len, flood.setup))
            batch = flood.request * max(1, 64 * 1024 // len(flood.request))
            limit = min(per_reader, FLOOD_BYTES)
        else:
            one = ctx.exchange.requests(64, ctx.rng("never-read", state.index), 1024)
            chunk = b"".join(one)
            batch = chunk * max(1, 256 * 1024 // len(chunk))
            limit = per_reader
        _push(ctx, sock, state, batch, limit, stop, deadline)
    except (OSError, PeerError) as exc:
        state.closed = f"{type(exc).__name__} after {state.sent} B"


def _push(ctx: Context, sock: socket.socket, state: _Reader, batch: bytes, limit: int,  # noqa: PLR0917
          stop: threading.Event, deadline: list[float]) -> None:
    sock.setblocking(False)
    view = memoryview(batch)
    window = StallWindow(ctx, sock, state.sent)
    for _ in range(10_000_000):
        now = time.monotonic()
        # The watcher ends the push (stop), or extends it (deadline); the grace second only
        # bounds a pusher whose watcher was not scheduled in time.
        if stop.is_set() or now >= deadline[0] + 1.0:
            return
        if state.sent >= limit:
            state.all_sent = True
            return
        if window.stopped(now, state.sent):
            state.stalled = True
            return
        try:
            sent = sock.send(view[: min(len(view), limit - state.sent)])
        except (BlockingIOError, ssl.SSLWantWriteError):
            sent = 0
        except OSError as exc:
            state.closed = f"{type(exc).__name__} after {state.sent} B"
            return
        state.sent += sent
        window.sent += sent
        view = view[sent:] or memoryview(batch)
        if sent:
            continue
        readable, _, _ = select.select([sock], [sock], [], 0.05)
        if readable and _peer_closed(sock):
            state.closed = f"the server closed it after {state.sent} B"
            return


class StallWindow:
    """Whether the server stopped reading from one pusher, judged over STALL_WINDOW windows.

    Stopped reading: it read (almost) nothing of ours in a window while our bytes waited in
    its receive queue, and it was neither starved (under MIN_SHARE of a CPU while waiting for
    one: a server that could not run has shown nothing) nor busy (runnable most of the
    window: a server crawling through what it already read, as the tutorial does when it
    logs its whole buffer per write, has not stopped; a loaded machine makes it crawl
    longer).  Counted from what the server read, not from what we sent: a pusher that was
    itself not scheduled sent nothing in the window, and that says nothing about the server.
    A server in our own process cannot be seen waiting for a CPU or for the GIL, so it must
    leave our bytes unread for OWN_PROCESS_WINDOWS windows in a row.  Serving the probe is
    light: it does not make a server busy."""

    def __init__(self, ctx: Context, sock: socket.socket, sent: int) -> None:
        self._ctx, self._sock = ctx, sock
        self._needed = OWN_PROCESS_WINDOWS if ctx.tree.own else 1
        self._quiet = 0
        #: Bytes sent in the current window (the pusher adds them).
        self.sent = 0
        self._start = time.monotonic()
        self._read = server_read(sock, sent)
        self._sched = _scheduled(ctx)

    def stopped(self, now: float, sent: int) -> bool:
        """Call before each send (``sent``: all bytes sent on the socket so far): whether a
        window just ended with the server stopped."""
        if now - self._start < STALL_WINDOW:
            return False
        sched = _scheduled(self._ctx)
        read = server_read(self._sock, sent)
        if read is None or self._read is None:
            quiet = self.sent < STALL_BYTES
        else:
            quiet = read[0] - self._read[0] < STALL_BYTES and read[1] > 0
        if quiet and not _starved_or_busy(self._ctx, self._sched, sched, now - self._start):
            self._quiet += 1
        else:
            self._quiet = 0
        self._start, self.sent, self._read, self._sched = now, 0, read, sched
        return self._quiet >= self._needed


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
    except (BlockingIOError, InterruptedError, ssl.SSLError):
        return False
    except OSError:
        return True
    return data == b""


class _ServerTime(NamedTuple):
    """How the server tree had been scheduled at one moment: the wall clock, CPU and
    run-queue seconds (``schedstat``), CPU seconds (``/proc/<pid>/stat``, which keeps what
    exited threads used), and threads runnable then."""

    wall: float
    run: float
    wait: float
    cpu: float
    runnable_now: int


def _other_pids(ctx: Context) -> list[int]:
    """The server's pids if it runs in other processes: how our own process is scheduled
    says nothing about the server, since our own threads are busy pushing."""
    if not ctx.tree.visible or ctx.tree.own:
        return []
    # The sampler's last reading (at most 50 ms old): every pusher window and watcher turn
    # asks, and reading the tree walks all of /proc.
    latest = ctx.record.sampler.latest_pids
    pids = ctx.tree.pids() if latest is None else latest
    return [p for p in pids if p != os.getpid()]


def _scheduled(ctx: Context) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) of the server's threads so far."""
    times = [scheduled_seconds(p) for p in _other_pids(ctx)]
    known = [t for t in times if t is not None]
    if not known:
        return None
    return sum(t[0] for t in known), sum(t[1] for t in known)


def _starved_or_busy(ctx: Context, before: tuple[float, float] | None,
                     after: tuple[float, float] | None, seconds: float) -> bool:
    """Whether the server had almost no CPU over a window while it wanted one (starved), or
    was runnable most of it (busy: on a CPU or waiting for one, as a server crawling through
    what it read is on a loaded machine): either way, taking nothing from us then says
    nothing about whether it stops reading.  A server that stopped reading sleeps."""
    if before is None or after is None or seconds <= 0:
        return False
    run = (after[0] - before[0]) / seconds
    wait = (after[1] - before[1]) / seconds
    if run + wait > BUSY:
        return True
    return run < MIN_SHARE and (wait > BUSY or bool(_runnable_now(ctx)))


def _runnable_now(ctx: Context) -> int | None:
    """Threads of the server (in other processes) runnable right now, or None."""
    pids = _other_pids(ctx)
    values = [runnable_threads(p) for p in pids]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _server_time(ctx: Context) -> _ServerTime | None:
    pids = _other_pids(ctx)
    if not pids:
        return None
    run = wait = cpu = 0.0
    now = 0
    for pid in pids:
        times, used, runnable = scheduled_seconds(pid), cpu_seconds(pid), runnable_threads(pid)
        if times is None or used is None or runnable is None:
            continue
        run, wait, cpu, now = run + times[0], wait + times[1], cpu + used, now + runnable
    return _ServerTime(time.monotonic(), run, wait, cpu, now)


def starved(before: _ServerTime | None, after: _ServerTime | None,
            runnable_seen: float = 1.0) -> str | None:
    """How a server was starved of CPU between two readings, or None if it was not: under
    ``MIN_SHARE`` of a CPU, yet runnable most of the time (``schedstat``), or found
    runnable in most of the watcher's readings (``runnable_seen``, a share) and still at the
    end: the wait of a thread that never got its turn is not in ``schedstat`` yet, and one
    thread caught runnable once is a server at work, not a starved one."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    wall = after.wall - before.wall
    share = max(after.run - before.run, after.cpu - before.cpu) / wall
    runnable = (after.run + after.wait - before.run - before.wait) / wall
    waiting = bool(after.runnable_now) and runnable_seen > BUSY
    if share >= MIN_SHARE or (runnable <= BUSY and not waiting):
        return None
    shown = (f", {after.runnable_now} thread(s) waiting for a CPU at the end"
             if after.runnable_now else "")
    return f"runnable {runnable:.0%} of {wall:.1f} s, {share:.1%} of a CPU{shown}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _read_so_far(states: list[_Reader]) -> int:
    """Bytes of ours the server has read so far, over the readers still open."""
    total = 0
    for state in states:
        if state.sock is not None and state.closed is None:
            with contextlib.suppress(OSError):
                flow = request_flow(state.sock, state.sent, 0)
                total += 0 if flow is None else flow[0]
    return total


def _watch_after(ctx: Context, states: list[_Reader]) -> None:
    """After the push, keep sampling while the server still works through what it was sent:
    until it read nothing more and its memory rose less than WATCH_QUIET_BYTES for
    AFTER_PUSH (a loaded machine slows a server down, it does not bound it), at most
    AFTER_PUSH_MAX, or until the memory is plainly past the limit."""
    sampler = ctx.record.sampler
    start = time.monotonic()
    quiet_since = start
    last = sampler.sample().memory
    last_read = _read_so_far(states)
    for _ in range(10_000):
        now = time.monotonic()
        if now - start >= AFTER_PUSH_MAX or now - quiet_since >= AFTER_PUSH:
            return
        threading.Event().wait(0.05)  # a sampling window, not synchronisation
        memory = sampler.sample().memory
        read = _read_so_far(states)
        growth = sampler.growth()
        if growth is not None and growth > 2 * ctx.limits.max_growth:
            return
        rose = memory is not None and last is not None and memory - last > WATCH_QUIET_BYTES
        if rose or read != last_read:
            quiet_since, last, last_read = time.monotonic(), memory, read


def _push_and_watch(ctx: Context, states: list[_Reader], per_reader: int,
                    stop: threading.Event, deadline: list[float]) -> ExchangeProbe:
    """Run the pushers beside a probe; stop them early when the memory is plainly unbounded;
    then keep sampling a little (the server may still work through what it read)."""
    limits = ctx.limits
    sampler = ctx.record.sampler
    started = time.monotonic()
    with ctx.probe("never-read") as probe:
        threads = [threading.Thread(target=_pusher, args=(ctx, s, per_reader, stop, deadline),
                                    name="multiconn-never-read") for s in states]
        for t in threads:
            t.start()
        extended = False
        for _ in range(100_000):
            if not any(t.is_alive() for t in threads) or time.monotonic() > deadline[0] + 2:
                break
            threads[0].join(0.05)
            now_runnable = _runnable_now(ctx)
            if now_runnable is not None:
                states[0].readings += 1
                states[0].runnable_readings += bool(now_runnable)
            growth = sampler.growth()
            if growth is not None and growth > 2 * limits.max_growth:
                states[0].ended_early = True  # plainly unbounded: no need to push on
                stop.set()
            if time.monotonic() < deadline[0]:
                continue
            rising = sampler.growth_since(0.5)
            reading = any(not (r.closed or r.stalled or r.all_sent) for r in states)
            if not extended and ((rising is not None and rising > RISING) or reading):
                # Still rising, or still reading, at the end of the budget (a slow server
                # piling up, or a bounded one a loaded machine slowed down before it pushes
                # back): push on, once, long enough to see which.
                extended = True
                deadline[0] = started + BUDGET_MAX
            else:
                stop.set()
        stop.set()
        for t in threads:
            t.join(limits.timeout)
        states[0].pushed_for = time.monotonic() - started
        _watch_after(ctx, states)
        for state in states:
            if state.sock is not None and state.closed is None:
                with contextlib.suppress(OSError):
                    flow = request_flow(state.sock, state.sent, 0)
                    state.consumed = None if flow is None else flow[0]
            # A server may close a never-reader only once its replies back up, after the
            # reader sent its last request: look again now.
            if state.sock is not None and state.closed is None and _peer_closed(state.sock):
                state.closed = f"the server closed it after {state.sent} B"
                state.stalled = state.all_sent = False
        probe.mark_close()
    return probe


def check(ctx: Context) -> str:  # noqa: PLR0912, PLR0915 - push, watch, then one verdict
    limits = ctx.limits
    sampler = ctx.record.sampler
    states = [_Reader(i) for i in range(READERS)]
    stop = threading.Event()
    before = _server_time(ctx)
    started = time.monotonic()
    deadline = [started + BUDGET]
    per_reader = max(limits.offered // READERS, 1)
    try:
        probe = _push_and_watch(ctx, states, per_reader, stop, deadline)
    finally:
        stop.set()
        for s in states:
            if s.sock is not None:
                s.sock.close()
    pushed = states[0].pushed_for
    sent = sum(s.sent for s in states)
    ctx.count(0, sent)
    closed = [s for s in states if s.closed]
    stalled = [s for s in states if s.stalled]
    drained = [s for s in states if s.all_sent]
    for s in states:
        ended = (s.closed or ("stopped reading" if s.stalled else
                              "took all offered" if s.all_sent else "still reading at the end"))
        ctx.record.note(f"never-reader {s.index}: sent {s.sent} B; {ended}")
    growth = sampler.growth()
    peak = sampler.peak_growth()
    rising = sampler.growth_since(max(0.3, 0.4 * pushed))
    read = [s.consumed for s in states if s.consumed is not None]
    consumed = sum(read) if read else None
    ctx.record.measure(server_read_bytes=consumed, offered_bytes=sent,
                       push_seconds=round(pushed, 3),
                       memory_growth_bytes=growth, memory_peak_growth_bytes=peak,
                       memory_rising_bytes=rising, closed=len(closed), stopped=len(stalled),
                       took_all_offered=len(drained), pids=sampler.pids_seen[:16])
    how = []
    if closed:
        how.append(f"closed {len(closed)} of {READERS}")
    if stalled:
        how.append(f"stopped reading from {len(stalled)} of {READERS}")
    if drained:
        how.append(f"took every byte offered from {len(drained)} of {READERS}")
    ways = ", ".join(how) or "kept reading"
    if growth is None:
        if len(closed) + len(stalled) == READERS:
            ctx.probe_ok(probe, "clients never read")
            return f"{ways} (its memory cannot be seen: {ctx.tree.describe()})"
        raise Status(NOTE, f"inconclusive: cannot see the server's memory "
                     f"({ctx.tree.describe()}); it took {sent} B from never-readers ({ways})")
    # Unbounded: past the limit, and either still rising, or it never pushed back (it took
    # every byte offered from a reader: with more offered it would have held more).
    still_rising = rising is not None and rising > RISING
    # Or it keeps what it reads: grown by MIN_HOLD and by half of all it read or more (a
    # server slowed down by its own pile-up does not reach the limit within the row, and may
    # take nothing for a while as it crawls: the tutorial logs its whole buffer per write).
    holds_it = consumed is not None and growth >= MIN_HOLD and growth * 2 >= consumed
    if holds_it or (growth > limits.max_growth and (
        states[0].ended_early or bool(drained) or still_rising
    )):
        raise Failed(
            f"buffers without bound: its memory grew {_mib(growth)} (peak {_mib(peak or 0)}"
            + ("" if consumed is None else f", having read {_mib(consumed)} of ours")
            + (") and was still growing" if still_rising or states[0].ended_early
               else ") and kept what it read")
            + f" while {READERS} clients pipelined {sent} B and never read "
            f"(limit {_mib(limits.max_growth)}; {ways}; pids "
            f"{', '.join(map(str, sampler.pids_seen[:8]))})")
    seen = (states[0].runnable_readings / states[0].readings) if states[0].readings else 1.0
    verdict = starved(before, _server_time(ctx), seen)
    if verdict is not None and len(closed) < READERS:
        # Nothing above failed, but a server that had no CPU could not show whether it
        # stops reading: taking nothing from us is then no evidence of a bound.
        raise Status(NOTE, f"no verdict: the server was starved of CPU ({verdict}), so it "
                     "could not show whether it stops reading; run the suite where it gets a "
                     "CPU")
    ctx.probe_ok(probe, "clients never read")
    reading = [s for s in states if not (s.closed or s.stalled or s.all_sent)]
    if reading and growth <= limits.max_growth:
        # It neither pushed back nor closed, yet its memory did not show what it read: a
        # server that grew before (an earlier run against the same process) reuses the
        # memory it freed without growing.  That is no evidence of a bound.
        took = "" if consumed is None else f", having read {_mib(consumed)} of ours"
        raise Status(NOTE, f"inconclusive: it still read from {len(reading)} of {READERS} "
                     f"never-readers at the end, or was busy working through what it read "
                     f"({ways}{took}), yet its memory grew only {_mib(max(growth, 0))}: "
                     "it neither pushed back nor grew within the row (memory it freed "
                     "earlier may be reused: run the suite against a freshly started server)")
    if growth > limits.max_growth:
        raise Status(NOTE, f"its memory grew {_mib(growth)} under never-readers and then "
                     f"stopped growing ({ways})")
    return f"memory +{_mib(max(growth, 0))} for {sent / 1e6:.1f} MB offered; {ways}"
