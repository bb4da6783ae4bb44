"""``exchange``: plain requests get right replies (and what later rows need to know: does the
server keep connections open, how big are its replies)."""

from __future__ import annotations

from pytest_multiconn.suite.context import Context, Failed

NAME = "exchange"


def check(ctx: Context) -> str:
    first = ctx.talk("exchange", 0, 3)
    if first.problem is not None:
        raise Failed(f"a plain exchange failed: {first.problem}")
    ctx.keep_alive = first.keeps_open
    outcomes = first.reader.outcomes
    ctx.reply_size = sum(len(o.reply) for o in outcomes) / max(len(outcomes), 1)
    ctx.record.measure(keep_alive=ctx.keep_alive, reply_bytes_avg=round(ctx.reply_size, 1))
    rest = ctx.many("exchange", 7, 3)
    ctx.expect_ok(rest, "plain connections")
    if not ctx.keep_alive:
        return ("every reply right; the server closes after each reply (one request per "
                "connection), so pipelining rows do not apply")
    return f"8 connections, 3 requests each, every reply right ({ctx.reply_size:.0f} B avg)"
