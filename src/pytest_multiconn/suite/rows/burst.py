"""``burst``: many clients connect at once, each sends one request, reads its reply and
closes, as real clients do.  A server that serves some and then no more has a connection
limit (a note, with the number); a full listen backlog is a note too; failing the clients
that come after is a failure."""

from __future__ import annotations

from pytest_multiconn.suite.context import Context, Failed, Status
from pytest_multiconn.suite.model import NOTE
from pytest_multiconn.suite.peers import burst
from pytest_multiconn.suite.probes import listen_counters

NAME = "burst"

#: How long the burst's clients wait for their replies.
BURST_SECONDS = 2.0


def check(ctx: Context) -> str:
    if ctx.tls is not None or isinstance(ctx.address, str):
        n_tls = 32
        talks = ctx.many("burst", n_tls, 1)
        ctx.expect_ok(talks, f"connections of a {n_tls}-connection burst")
        return f"{n_tls} at once"
    n = ctx.limits.burst
    before = listen_counters()
    result = burst(ctx.address, ctx.exchange, n, ctx.rng("burst"), timeout=BURST_SECONDS)
    after = listen_counters()
    ctx.count(n, 0)
    moved = {}
    if before is not None and after is not None:
        moved = {k: after[k] - before[k] for k in after if after[k] > before[k]}
    counters = ", ".join(f"{k} +{v}" for k, v in moved.items())
    ctx.record.measure(connections=n, served=result.served, connected=result.connected,
                       slow_connects=result.slow_connects, most_open=result.most_open,
                       served_seconds=round(result.seconds, 4), **moved)
    ctx.record.note(f"{n} clients at once: {result.connected} connected, {result.served} "
                    f"served in {result.seconds:.2f} s, at most {result.most_open} open and "
                    f"waiting at a time")
    for line in result.failed[:5]:
        ctx.record.note(line)
    backlog = bool(moved) and (result.slow_connects > 0 or result.connected < n)
    after_talks = ctx.many("after-burst", 4, 1)
    bad_after = [t.problem for t in after_talks if t.problem]
    if bad_after:
        raise Failed(f"served {result.served} of a {n}-connection burst, then failed the "
                     f"clients after it: {bad_after[0]}{ctx.serial_cause()}")
    if result.served == n:
        if backlog:
            raise Status(NOTE, f"all {n} served in {result.seconds:.2f} s, "
                         f"{result.slow_connects} only after a SYN retry: a full listen backlog "
                         f"({counters}); its listen() backlog is small")
        return f"{n} at once, all served in {result.seconds:.2f} s"
    if result.served == 0:
        first = result.failed[0] if result.failed else ""
        raise Failed(f"none of {n} burst connections was served within {BURST_SECONDS:.1f} s "
                     f"(it hangs under a burst){ctx.serial_cause()}; first: {first}")
    if backlog:
        raise Status(NOTE, f"{n - result.served} of {n} burst connections still waited on a "
                     f"full listen backlog after {BURST_SECONDS:.1f} s ({counters}): its listen() "
                     "backlog is small for a burst; it kept serving others")
    raise Status(NOTE, f"served {result.served} of {n} connections at once and no more within "
                 f"{BURST_SECONDS:.1f} s, though each closed after its reply: a connection limit "
                 f"of about {result.served}; it kept serving the clients after the burst")
