"""``pipelining``: N requests in one write get N replies, complete and in order."""

from __future__ import annotations

from pytest_multiconn.suite.context import Context, Status
from pytest_multiconn.suite.model import NA

NAME = "pipelining"


def check(ctx: Context) -> str:
    if not ctx.keep_alive:
        raise Status(NA, "does not apply: the server closes after each reply")
    talks = ctx.many("pipelining", 4, 50, how="pipelined")
    ctx.expect_ok(talks, "connections pipelining 50 requests in one write")
    return "4 connections x 50 pipelined requests, replies complete and in order"
