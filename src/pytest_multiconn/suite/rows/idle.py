"""``silent+never_close``: 16 silent connections and 16 that got their reply and never close
cost no CPU, and do not stop the server serving others.

The CPU is the whole server tree's (a pre-fork server's master and workers: a worker that
spins is caught though the master sleeps), measured over a quiet window after the server
settled; the pids are named in the row.
"""

from __future__ import annotations

import socket
import threading
import time

from pytest_multiconn.exchanges.base import ReplyReader
from pytest_multiconn.suite.context import Context, Failed
from pytest_multiconn.suite.peers import PeerError, open_socket, read_replies
from pytest_multiconn.suite.probes import preemptions, wait_accept_room, wanted_cpu_seconds

NAME = "silent+never_close"

#: The quiet window over which idle CPU is measured (a spinner on a loaded machine needs it
#: to show its preemptions; 0.3 s missed one under load).
IDLE_WINDOW = 0.5
#: The least share of a CPU a spinner gets even on a machine loaded 25-fold (2 cores, 50
#: runnable threads); an idle server that was runnable only while waiting for a turn uses
#: less.
SPINNER_MIN_SHARE = 0.02


def _sum(values: list[float | int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def check(ctx: Context) -> str:
    if ctx.serial:
        blocked = ("32 idle connections would block it for good: it serves one connection "
                   "at a time (see the concurrency row)")
        _spins_too(ctx, blocked)
        raise Failed(blocked)
    socks: list[socket.socket] = []
    # Once the server stopped accepting (its accept queue stayed full for a second: every
    # worker is held by a silent connection), waiting for room again would only add a
    # second per connection: the connections queue, and the bound below judges them.
    accepting = [True]

    def room() -> None:
        if accepting[0] and not wait_accept_room(ctx.address):
            accepting[0] = False
            ctx.record.note("its accept queue stayed full for 1 s: it stopped accepting")

    try:
        for _ in range(16):
            room()
            socks.append(open_socket(ctx.address, ctx.tls, ctx.limits.timeout))
        ctx.record.note("16 silent connections open")
        lingering = []
        for i in range(16):
            rng = ctx.rng("never-close", i)
            requests = ctx.exchange.requests(1, rng, 32)
            room()
            sock = open_socket(ctx.address, ctx.tls, ctx.limits.timeout)
            socks.append(sock)
            sock.sendall(requests[0])
            reader = ReplyReader(ctx.exchange, requests)
            lingering.append((sock, reader))
        # A server that serves only as many connections as it has workers is blocked by the
        # silent ones: say so within a bound, not after the whole timeout.
        bound = max(2 * ctx.limits.max_probe_latency, 2.0)
        deadline = time.monotonic() + bound
        for i, (sock, reader) in enumerate(lingering):
            try:
                read_replies(sock, reader, deadline)
            except PeerError as exc:
                blocked = (f"16 silent connections block others: never-closing connection "
                           f"{i} got no reply within {bound:.1f} s ({exc}); it serves as many "
                           "connections at a time as it has workers or threads")
                # Its CPU meanwhile, with every connection still open: a blocked server
                # that also spins says both.
                _spins_too(ctx, blocked)
                raise Failed(blocked) from None
            if reader.first_problem():
                raise Failed(f"a never-closing connection got a wrong reply: "
                             f"{reader.first_problem()}")
        ctx.count(32, 0)
        ctx.record.note("16 never-closing connections got their replies")
        probe = ctx.many("idle-probe", 4, 1, deadline=time.monotonic() + bound)
        ctx.expect_ok(probe, "connections made while 32 others sat idle")
        tree = ctx.tree
        if not tree.visible:
            return f"32 idle connections held; CPU not measurable here: {tree.describe()}"
        return _measure(ctx)
    except (OSError, PeerError) as exc:
        raise Failed(f"idle connections: {type(exc).__name__}: {exc}{ctx.serial_cause()}"
                     ) from None
    finally:
        for sock in socks:
            sock.close()


def _spins_too(ctx: Context, blocked: str) -> None:
    """Measure the idle CPU of a server the row already fails for blocking: raise the spin,
    with the blocking, when it spins too (nothing when it is idle or cannot be seen)."""
    if not ctx.tree.visible:
        return
    try:
        _measure(ctx)
    except Failed as exc:
        raise Failed(f"{exc}; and {blocked}") from None


def _measure(ctx: Context) -> str:
    tree = ctx.tree
    pids = tree.pids()
    own = tree.own
    before_cpu = tree.cpu(pids)
    before_pre = _sum([preemptions(p) for p in pids])
    before_want = None if own else _sum([wanted_cpu_seconds(p) for p in pids])
    before = time.monotonic()
    # An Event nobody sets: a bounded wait that uses no CPU, which is what is measured (the
    # sampler paused: in this process its readings would be counted as the server's).
    with ctx.record.sampler.paused():
        threading.Event().wait(IDLE_WINDOW)
    after_cpu = tree.cpu(pids)
    after_pre = _sum([preemptions(p) for p in pids])
    after_want = None if own else _sum([wanted_cpu_seconds(p) for p in pids])
    wall = time.monotonic() - before
    if before_cpu is None or after_cpu is None:
        return "32 idle connections held; CPU not measurable here"
    share = max(after_cpu - before_cpu, 0.0) / wall
    preempted = 0
    if after_pre is not None and before_pre is not None:
        preempted = int(max(after_pre - before_pre, 0))
    wanted = None
    if before_want is not None and after_want is not None:
        wanted = max(after_want - before_want, 0.0) / wall
    per_pid = _per_pid_share(pids, wall) if not own else {}
    ctx.record.measure(cpu_share=round(share, 4), preemptions=preempted,
                       runnable_share=None if wanted is None else round(wanted, 4),
                       window_seconds=round(wall, 3), pids=pids)
    # CPU share alone misses a spinner on a busy machine (it gets little CPU); being
    # runnable all the time (on a CPU or waiting for one), or preempted again and again,
    # means it always wanted more.  An idle loop is none of these.  Waiting counts as
    # runnable, so on a loaded machine runnable time and preemptions count only with some
    # CPU used.
    spinning = share >= SPINNER_MIN_SHARE and (
        (wanted is not None and wanted > ctx.limits.max_idle_cpu)
        or preempted >= ctx.limits.max_idle_preemptions)
    where = f" (pids measured: {', '.join(map(str, pids))})"
    if share > ctx.limits.max_idle_cpu or spinning:
        shown = "" if wanted is None else f", runnable {wanted:.0%} of the time"
        busiest = ""
        if per_pid:
            pid, top = max(per_pid.items(), key=lambda kv: kv[1])
            busiest = f"; busiest: pid {pid} at {top:.0%}"
        raise Failed(
            f"it spins: {share:.0%} of a CPU{shown} and preempted {preempted} times in "
            f"{wall * 1e3:.0f} ms with 32 idle connections open (limits "
            f"{ctx.limits.max_idle_cpu:.0%}, {ctx.limits.max_idle_preemptions}){busiest}; a "
            f"loop that always asks for EVENT_WRITE does this{where}"
        )
    return f"32 idle connections cost {share:.1%} of a CPU, {preempted} preemptions{where}"


def _per_pid_share(pids: list[int], wall: float) -> dict[int, float]:
    # A second short reading per pid, to name the busiest process in a failure.
    from pytest_multiconn.suite.measure import process_cpu

    start = {p: process_cpu(p) for p in pids}
    began = time.monotonic()
    threading.Event().wait(min(wall, 0.1))  # a measurement window
    span = time.monotonic() - began
    shares = {}
    for p in pids:
        a, b = start[p], process_cpu(p)
        if a is not None and b is not None and span > 0:
            shares[p] = max(b - a, 0.0) / span
    return shares
