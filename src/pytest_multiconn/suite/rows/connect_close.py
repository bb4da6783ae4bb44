"""``connect_close``: connections closed right after connecting do not stop the server."""

from __future__ import annotations

import contextlib

from pytest_multiconn.suite.context import Context
from pytest_multiconn.suite.peers import open_socket
from pytest_multiconn.suite.probes import wait_accept_room

NAME = "connect_close"


def check(ctx: Context) -> str:
    for _ in range(64):
        wait_accept_room(ctx.address)
        with contextlib.suppress(OSError):
            # Plain even over TLS: the connection closes before any handshake.
            sock = open_socket(ctx.address, None, ctx.limits.timeout)
            sock.close()
    ctx.count(64, 0)
    ctx.record.note("64 connections opened and closed at once")
    after = ctx.many("after-connect-close", 4, 1)
    ctx.expect_ok(after, "connections after 64 instant closes")
    return "64 instant closes, then normal service"
