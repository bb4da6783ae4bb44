"""``slow_reader``: two clients that read slowly do not starve another one."""

from __future__ import annotations

import time

from pytest_multiconn.suite.context import Context

NAME = "slow_reader"


#: Requests each slow reader pipelines at most, and the reply bytes it asks for at most (at
#: RATE that is a second of reading: big replies, a memcached value of 100 KiB, say, mean
#: fewer requests, or the slow readers would outlast the row).
MAX_REQUESTS = 400
#: The slow readers' receive buffer: two loopback segments (64 KiB MSS), so reading slowly
#: opens the window by whole segments (smaller, Linux holds the update back and the server
#: waits on zero-window probes that back off past a second: slow, but not the server's doing).
SLOW_RCVBUF = 128 * 1024
RATE = 2 * 1024 * 1024
REPLY_BYTES = RATE
SIZE = 512


#: The slow readers' bound: this many times the reading their rate allows, at least
#: MIN_SECONDS (a reader whose replies stop coming fails then, not at the row's timeout).
SLACK = 4.0
MIN_SECONDS = 5.0


def _count(ctx: Context) -> tuple[int, float]:
    """Requests per slow reader, and the reply bytes they ask for."""
    if not ctx.keep_alive:
        return 1, max(ctx.reply_size, 1.0)
    (request,) = ctx.exchange.requests(1, ctx.rng("slow-size"), SIZE)
    want = ctx.exchange.expected(request)
    size = max(len(want) if want is not None else ctx.reply_size, 1.0)
    count = max(1, min(MAX_REQUESTS, int(REPLY_BYTES // size)))
    return count, count * size


def check(ctx: Context) -> str:
    count, asked = _count(ctx)
    bound = min(max(MIN_SECONDS, SLACK * asked / RATE), ctx.limits.timeout)
    ctx.record.measure(requests_per_reader=count, reply_bytes_per_reader=int(asked),
                       bound_seconds=round(bound, 3))
    with ctx.probe("slow") as probe:
        talks = ctx.many("slow", 2, count, how="pipelined", rcvbuf=SLOW_RCVBUF, rate=RATE,
                         size=SIZE, deadline=time.monotonic() + bound)
        probe.mark_close()
    ctx.expect_ok(talks, f"slow readers (2 MiB/s, {count} pipelined requests, bound {bound:.1f} s)")
    ctx.probe_ok(probe, "two clients read slowly")
    return f"other clients' worst reply {probe.worst * 1e3:.1f} ms"
