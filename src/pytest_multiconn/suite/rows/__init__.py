"""The suite's rows, one module per row, in the order they run.

Each module has ``NAME`` and ``check(ctx) -> str``: the detail of a kept contract, or it
raises :class:`~pytest_multiconn.suite.context.Failed` (a broken one) or
:class:`~pytest_multiconn.suite.context.Status` (n/a, or a note).  The order matters: the
exchange row finds what the others need (keep-alive, reply size, a serial server), the idle
row runs before any flood, and reset runs last (a server that dies on an RST fails no other
row).
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_multiconn.suite.context import Context
from pytest_multiconn.suite.rows import (
    burst,
    concurrency,
    connect_close,
    exchange,
    garbage,
    half_close,
    idle,
    never_read,
    partial_send,
    pipelining,
    reset,
    slow_reader,
)

Check = Callable[[Context], str]

#: (name, check), in the order the rows run.
ROWS: tuple[tuple[str, Check], ...] = tuple(
    (m.NAME, m.check)
    for m in (exchange, concurrency, idle, partial_send, pipelining, slow_reader, garbage,
              half_close, never_read, burst, connect_close, reset)
)

#: The rows every run needs, whatever ``only=`` says: what they find shapes the others.
ALWAYS = ("exchange",)

ROW_NAMES = tuple(name for name, _ in ROWS)
