"""``slow_reader``: two clients that read slowly do not starve another one."""

from __future__ import annotations

from pytest_multiconn.suite.context import Context

NAME = "slow_reader"


def check(ctx: Context) -> str:
    count = 400 if ctx.keep_alive else 1
    with ctx.probe("slow") as probe:
        talks = ctx.many("slow", 2, count, how="pipelined", rcvbuf=8192, rate=2 * 1024 * 1024,
                         size=512)
        probe.mark_close()
    ctx.expect_ok(talks, "slow readers (2 MiB/s)")
    ctx.probe_ok(probe, "two clients read slowly")
    return f"other clients' worst reply {probe.worst * 1e3:.1f} ms"
