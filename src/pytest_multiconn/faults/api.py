"""What a fault may ask of the connection it acts on: one narrow Protocol per family.

A fault's per-connection object (a client :class:`~pytest_multiconn.faults.FaultSession`, a
stream fault's :class:`~pytest_multiconn.faults.Stage`) receives one of these, never the
concrete connection class, so a custom fault is written against public, documented types
only, and the connection classes may change underneath (TLS, a new transport) without
breaking faults.  The stream faults' (every server's and the proxy's) is
:class:`~pytest_multiconn.faults.PipeAPI`, beside the stages in ``faults/toxics/base.py``.

Everything here runs in the loop thread; timers come from ``loop`` (``call_later``,
``call_at``, ``call_soon``; each returns a :class:`~pytest_multiconn.lowlevel.Timer` with
``cancel()``); a fault never sleeps.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

from pytest_multiconn.core.loop import Loop
from pytest_multiconn.exchanges.base import Exchange


class ClientConnectionAPI(Protocol):
    """One client connection, as a client fault session sees it."""

    #: The connection's selector loop: timers (``call_later``...), run in its thread.
    loop: Loop
    #: The socket, for options set before connecting (``SO_SNDBUF``, ``SO_RCVBUF``).
    sock: socket.socket
    #: The most bytes the next ``send()`` may carry (``None``: no cap); a fault may lower it.
    max_send: int | None
    #: Bytes asked of each ``recv()``.
    read_size: int
    #: What this connection speaks (``Echo()`` when the client echoes its messages).
    exchange: Exchange
    #: The requests (echo: the messages) this connection sends, in order, before faults.
    messages: Sequence[bytes]
    #: The exact bytes this connection expects back (set from the payload the faults chose);
    #: empty when nothing comes back, or when the exchange parses its replies instead
    #: (HTTP, a checker): then :attr:`replies_complete` says when they are all in.
    expected: bytes
    #: Bytes read from the server so far.
    received: int
    #: Bytes handed to the kernel so far.
    bytes_out: int
    @property
    def closed(self) -> bool:
        """True once the socket is closed."""

    @property
    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        ...

    @property
    def replies_complete(self) -> bool:
        """True once every reply this connection waits for has arrived (exact bytes counted,
        parsed replies framed by the exchange); True at once when it expects none."""
        ...

    @property
    def half_close_safe(self) -> bool:
        """False under TLS: a half-close may lose what the server still sends, so HalfClose
        waits for the full echo first (see :mod:`pytest_multiconn.tls.stream`)."""
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` (at once if the kernel takes it, the rest buffered)."""

    def write_eof(self) -> None:
        """Shut our write side down once buffered output has left."""

    def hold_output(self) -> None:
        """Stop sending buffered output until :meth:`release_output`."""

    def release_output(self) -> None:
        """Resume sending buffered output."""

    def pause_reading(self) -> None:
        """Stop reading from the socket (the server's sends then fill the buffers)."""

    def resume_reading(self) -> None:
        """Read again."""

    def fault_note(self, text: str) -> None:
        """Record what the fault did (in the result's ``note`` and the transcript)."""

    def exchange_done(self) -> None:
        """The fault decides this connection's exchange is over (it may linger)."""

    def deliberate_reset(self, note: str) -> None:
        """Abort with an RST on purpose (the result counts it as intended, not a failure)."""

    def deliberate_close(self, note: str) -> None:
        """Close on purpose (counted as intended)."""
