"""``garbage``: bytes that are no request get an answer the protocol allows (an error, a
close, nothing, or an echo), and the server keeps serving everyone else."""

from __future__ import annotations

from pytest_multiconn.exchanges.garbage import (
    QUIET,
    answer_problem,
    classify_answer,
    garbage_bytes,
)
from pytest_multiconn.suite.context import Context, Failed, Status
from pytest_multiconn.suite.model import NA
from pytest_multiconn.suite.peers import open_socket

NAME = "garbage"


def check(ctx: Context) -> str:
    answers = ctx.exchange.garbage_answers()
    if not answers:
        raise Status(NA, f"does not apply: the {ctx.exchange.name} exchange does not say what "
                     "a server may answer to garbage (multiconn suite: --answers-garbage)")
    rng = ctx.rng("garbage")
    if "echo" in answers:
        talks = ctx.many("garbage", 8, 1, size=64 * 1024)
        ctx.expect_ok(talks, "connections sending 64 KiB of random binary")
        return "every byte value echoed exactly"
    seen: list[str] = []
    for i in range(4):
        junk = garbage_bytes(rng, 4096)
        with open_socket(ctx.address, ctx.tls, ctx.limits.timeout) as sock:
            ctx.count(1, len(junk))
            try:
                sock.sendall(junk)
                sock.settimeout(QUIET if "nothing" in answers else ctx.limits.timeout / 2)
                first: bytes | None = sock.recv(4096)
            except TimeoutError:
                first = None
            except OSError:
                first = b""
        what = classify_answer(ctx.exchange, first)
        ctx.record.note(f"garbage {i}: {len(junk)} B sent, answer: {what}")
        problem = answer_problem(ctx.exchange, what)
        if problem is not None:
            raise Failed(f"{problem} (garbage {i})")
        seen.append(what)
    after = ctx.many("after-garbage", 4, 1)
    ctx.expect_ok(after, "connections after garbage")
    return f"answered garbage with {', '.join(sorted(set(seen)))}; kept serving"
