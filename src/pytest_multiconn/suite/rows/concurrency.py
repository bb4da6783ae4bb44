"""``concurrency``: a connection that connects and sends nothing must not block another."""

from __future__ import annotations

import time

from pytest_multiconn.exchanges.base import ReplyReader
from pytest_multiconn.suite.context import Context, Failed
from pytest_multiconn.suite.peers import PeerError, open_socket, read_replies

NAME = "concurrency"


def check(ctx: Context) -> str:
    with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as silent:
        ctx.count(1, 0)
        ctx.record.note("silent connection open")
        rng = ctx.rng("concurrency")
        requests = ctx.exchange.requests(1, rng, 32)
        reader = ReplyReader(ctx.exchange, requests)
        wait = max(ctx.limits.max_probe_latency, 1.0)
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as other:
            ctx.count(1, len(requests[0]))
            other.sendall(requests[0])
            started = time.monotonic()
            try:
                read_replies(other, reader, started + wait)
                delay = time.monotonic() - started
                ctx.record.measure(reply_seconds=round(delay, 4))
                ctx.record.note(f"second connection: reply after {delay * 1e3:.1f} ms")
                return "a silent connection did not block another one"
            except PeerError:
                ctx.record.note(f"second connection: no reply within {wait:.1f} s")
            silent.close()
            ctx.record.note("silent connection closed")
            try:
                read_replies(other, reader, time.monotonic() + ctx.limits.timeout)
            except PeerError as exc:
                raise Failed(f"a second connection got no reply, even after the first "
                             f"closed (it hangs): {exc}") from None
            ctx.record.note("second connection: reply came once the silent one closed")
    ctx.serial = True
    raise Failed(f"serves one connection at a time: a second connection got no reply for "
                 f"{wait:.1f} s while a silent one was open, and got it as soon as that one "
                 "closed")
