"""``partial_send``: replies stay right when requests arrive 1 byte per send, and in random
small chunks with pauses."""

from __future__ import annotations

from pytest_multiconn.suite.context import Context, Failed

NAME = "partial_send"


def check(ctx: Context) -> str:
    one = ctx.many("partial-1", 4, 3, how="split", max_chunk=1, max_pause=0.001, size=48)
    try:
        ctx.expect_ok(one, "connections sending each request 1 byte per send()")
    except Failed as exc:
        raise Failed(f"replies wrong when requests arrive 1 byte at a time (a server that "
                     f"takes one recv() for one request does this): {exc}") from None
    paced = ctx.many("partial-paced", 2, 3, how="split", max_chunk=128, max_pause=0.002,
                     size=1024)
    ctx.expect_ok(paced, "connections sending 1..128 byte chunks with random pauses")
    return "every reply right with requests split into 1-byte and 1..128-byte sends"
