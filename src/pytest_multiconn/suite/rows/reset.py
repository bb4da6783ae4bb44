"""``reset``: RSTs before, in the middle of and after a request do not stop the server (run
last: a server that dies on an RST fails no other row)."""

from __future__ import annotations

from pytest_multiconn.suite.context import Context, Failed
from pytest_multiconn.suite.peers import open_socket, rst_close

NAME = "reset"


def check(ctx: Context) -> str:
    for at in ("before", "mid", "after"):
        for i in range(2):
            rng = ctx.rng("reset", at, i)
            (request,) = ctx.exchange.requests(1, rng, 1024)
            try:
                sock = open_socket(ctx.address, ctx.tls, ctx.limits.timeout)
            except OSError as exc:
                raise Failed(f"could not connect for the RST {at} sending: {exc}") from None
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
            ctx.record.note(f"RST {at} sending the request ({i})")
    after = ctx.many("after-reset", 8, 1)
    ctx.expect_ok(after, "connections after 6 resets (before, mid-request, after sending)")
    return "kept serving after RSTs before, mid-request and after sending"
