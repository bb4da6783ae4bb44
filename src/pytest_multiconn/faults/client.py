"""Client-side faults: small, named, composable misbehaviours of client connections.

A fault is a frozen parameter object (:class:`ClientFault`, shaped like every fault: see
:mod:`pytest_multiconn.faults.base`); for each connection it applies to, it makes a
:class:`FaultSession` holding that connection's state and hooks.  Sessions act only through
:class:`~pytest_multiconn.faults.ClientConnectionAPI` (``max_send``, ``read_size``,
``hold_output``, ``pause_reading``, ``write_eof``, ``deliberate_reset``...), so they work
unchanged on any client connection, TLS included, and a custom fault needs public types only.

Every random choice (chunk sizes, pauses, where a reset lands, which connection gets a fault,
garbage bytes) comes from :func:`~pytest_multiconn.faults.base.fault_rng`: the client's seed,
the connection number and the fault's position, so one seed replays the same schedule.

Every fault works with every exchange (:mod:`pytest_multiconn.exchanges`): the driver
(:mod:`pytest_multiconn.faults.client_driver`) compares exact replies byte for byte and has
the exchange's reader judge parsed ones; ``Garbage`` runs where the exchange says what a
server may answer to garbage.

Usage::

    MultiConnClient(address, 10, faults=[PartialSend(max_chunk=1), HalfClose()]).run()
    MultiConnClient(address, 10, exchange=HTTP(), requests=4, faults=[SlowReader()]).run()
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pytest_multiconn.exchanges.garbage import QUIET, garbage_bytes
from pytest_multiconn.exchanges.simple import Echo
from pytest_multiconn.faults.api import ClientConnectionAPI
from pytest_multiconn.faults.base import Fault, Registry
from pytest_multiconn.faults.params import choice, integer, optional, param, seconds

if TYPE_CHECKING:
    from pytest_multiconn.core.loop import Timer

#: Node ids of pytest tests that ran faulty connections (their failure reports show the seed).
FAULTY_TESTS: set[str] = set()

#: Block size a streaming fault (NeverRead) writes at a time.
STREAM_BLOCK = 64 * 1024


class FaultSession:
    """One fault acting on one connection; every hook is a no-op unless overridden.

    ``conn`` is the :class:`~pytest_multiconn.faults.ClientConnectionAPI` of the connection;
    ``rng`` its seeded random numbers.  The driver calls hooks in the order the faults were
    given, so faults compose.
    """

    #: Keep the connection open after its exchange (until the client is closed).
    lingers = False
    #: Whether this connection reads its replies (False: completion comes from the fault).
    reads = True
    #: Complete the exchange only after the server's EOF follows the full echo.
    wants_eof = False
    #: The payload is garbage: the server's answer is judged by the exchange's
    #: ``garbage_answers()`` instead of as replies (unless the server echoes garbage).
    sends_garbage = False

    def __init__(self, fault: ClientFault, conn: ClientConnectionAPI, rng: random.Random) -> None:
        self.fault = fault
        self.conn = conn
        self.rng = rng

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fault!r}>"

    def prepare(self) -> None:
        """Before connect: set socket options."""

    def connected(self) -> None:
        """The connection is up; nothing was sent yet."""

    def payload(self, data: bytes | None) -> bytes | None:
        """What to send (``None``: send nothing); gets the previous fault's choice."""
        return data

    def start_sending(self, data: bytes) -> bool:
        """Return True to take over writing (the driver then writes nothing); ``data`` is the
        connection's requests, joined, as the exchange makes them."""
        return False

    def payload_written(self) -> None:
        """The payload was handed to ``write()`` (it may still sit in our buffer)."""

    def after_send(self, sent: int) -> None:
        """One ``send`` syscall handed ``sent`` bytes to the kernel."""

    def all_sent(self) -> None:
        """Everything this connection meant to send has left our buffer."""

    def received(self, data: bytes) -> None:
        """``data`` was read from the server."""

    def writing_paused(self) -> None:
        """Our output buffer went over the high-water mark."""

    def writing_resumed(self) -> None:
        """Our output buffer drained below the low-water mark."""

    def closed(self) -> None:
        """The connection closed (cancel timers here)."""


@dataclass(frozen=True, repr=False)
class ClientFault(Fault):
    """Base of client faults: parameters, and a :class:`FaultSession` per affected connection.

    ``probability`` is the chance (a seeded draw) that one connection gets it.  A subclass
    sets ``name`` and ``session_class`` (or overrides :meth:`session`).
    """

    family: ClassVar[str] = "client"
    #: The fault's name; also its pytest parameter id in ``multiconn_fault``.
    name: ClassVar[str] = "fault"
    session_class: ClassVar[type[FaultSession]] = FaultSession

    # -- client level -----------------------------------------------------------------------
    def connection_count(self, requested: int) -> int:
        """How many connections the client opens (Burst raises it)."""
        return requested

    def session(self, conn: ClientConnectionAPI, rng: random.Random) -> FaultSession:
        """This fault's state and hooks on one connection."""
        return self.session_class(self, conn, rng)


#: Client faults by name (``multiconn_fault`` ids, the catalogue).
CLIENT_FAULTS: Registry[ClientFault] = Registry("client")


# --- PartialSend ----------------------------------------------------------------------------


class _PartialSendSession(FaultSession):
    fault: PartialSend

    def __init__(self, fault: ClientFault, conn: ClientConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self.timer: Timer | None = None

    def prepare(self) -> None:
        if self.fault.sndbuf is not None:
            # The kernel doubles the value and enforces a minimum (about 4.5 KiB on Linux);
            # either way it then returns short writes and EAGAIN on its own.
            self.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.fault.sndbuf)

    def connected(self) -> None:
        self.conn.max_send = self.rng.randint(1, self.fault.max_chunk)

    def after_send(self, sent: int) -> None:
        conn = self.conn
        conn.max_send = self.rng.randint(1, self.fault.max_chunk)
        if self.fault.delay > 0 and sent and not conn.closed:
            # Hold further output for a random pause; release_output re-arms EVENT_WRITE.
            conn.hold_output()
            self.timer = conn.loop.call_later(self.rng.uniform(0, self.fault.delay), self._release)

    def _release(self) -> None:
        self.timer = None
        self.conn.release_output()

    def closed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class PartialSend(ClientFault):
    """Writes in chunks of 1..max_chunk bytes, pausing up to ``delay`` s after each chunk.

    ``sndbuf`` shrinks ``SO_SNDBUF`` so the kernel itself returns short writes and EAGAIN.
    """

    name = "partial_send"
    session_class = _PartialSendSession
    quick: ClassVar[Mapping[str, Any]] = {"max_chunk": 7, "delay": 0.002}

    max_chunk: int = param(1, integer(1))
    delay: float = param(0.0, seconds())
    _: KW_ONLY
    sndbuf: int | None = param(None, optional(integer(1)))


# --- readers --------------------------------------------------------------------------------


class _SlowReaderSession(FaultSession):
    fault: SlowReader

    def __init__(self, fault: ClientFault, conn: ClientConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self.timer: Timer | None = None

    def prepare(self) -> None:
        if self.fault.rcvbuf is not None:
            # Set before connect so the advertised window is small from the first segment.
            self.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.fault.rcvbuf)

    def connected(self) -> None:
        # About 20 reads a second: small reads make the trickle smooth, not bursty.
        self.conn.read_size = max(1, min(self.conn.read_size, self.fault.bytes_per_second // 20))
        if self.fault.delay:
            self.conn.pause_reading()
            self.timer = self.conn.loop.call_later(self.fault.delay, self._resume)

    def received(self, data: bytes) -> None:
        conn = self.conn
        if conn.closed or self.timer is not None:
            return
        conn.pause_reading()
        self.timer = conn.loop.call_later(len(data) / self.fault.bytes_per_second, self._resume)

    def _resume(self) -> None:
        self.timer = None
        self.conn.resume_reading()

    def closed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class SlowReader(ClientFault):
    """Reads the replies at ``bytes_per_second`` at most (after ``delay`` s of not reading) with a
    small receive buffer, so the server's send buffer fills and its backpressure is exercised."""

    name = "slow_reader"
    session_class = _SlowReaderSession
    quick: ClassVar[Mapping[str, Any]] = {"bytes_per_second": 256 * 1024}

    bytes_per_second: int = param(64 * 1024, integer(1))
    _: KW_ONLY
    delay: float = param(0.0, seconds())
    rcvbuf: int | None = param(8192, optional(integer(1)))


class _NeverReadSession(FaultSession):
    fault: NeverRead
    reads = False
    lingers = True

    def __init__(self, fault: ClientFault, conn: ClientConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        self.timer: Timer | None = None
        self.remaining = 0
        self.block = b""
        self.paused = False
        self.last_out = -1
        self.started = 0.0

    def prepare(self) -> None:
        if self.fault.rcvbuf is not None:
            self.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.fault.rcvbuf)

    def connected(self) -> None:
        self.conn.pause_reading()  # and never resume

    def payload(self, data: bytes | None) -> bytes | None:
        return None  # nothing for the ordinary writer: start_sending streams instead

    def start_sending(self, data: bytes) -> bool:
        self.remaining = self.fault.size
        self.started = time.monotonic()
        if isinstance(self.conn.exchange, Echo) or not data:
            self.block = self.rng.randbytes(min(STREAM_BLOCK, self.fault.size))
            self.conn.fault_note(f"streaming {self.fault.size} B without reading")
        else:
            # Another protocol: pipeline its requests again and again (random bytes would be
            # garbage, answered by a close), in whole requests, so every write is well formed.
            self.block = data * max(1, STREAM_BLOCK // len(data))
            self.remaining = -(-self.fault.size // len(data)) * len(data)
            self.conn.fault_note(
                f"pipelining {self.remaining // len(data)} rounds of "
                f"{len(self.conn.messages)} requests ({self.remaining} B) without reading"
            )
        self._pump()
        self._arm_stall_check()
        return True

    def _pump(self) -> None:
        conn = self.conn
        while self.remaining > 0 and not self.paused and not conn.closed:
            n = min(self.remaining, len(self.block))
            self.remaining -= n
            conn.write(self.block[:n] if n < len(self.block) else self.block)

    def writing_paused(self) -> None:
        self.paused = True

    def writing_resumed(self) -> None:
        self.paused = False
        self._pump()

    def _arm_stall_check(self) -> None:
        self.timer = self.conn.loop.call_later(self.fault.stall, self._check_stall)

    def _check_stall(self) -> None:
        self.timer = None
        conn = self.conn
        if conn.closed:
            return
        if self.remaining == 0 and conn.buffered == 0:
            conn.fault_note(f"sent all {conn.bytes_out} B; the server kept reading")
            conn.exchange_done()
            return
        duration = self.fault.duration
        if duration is not None and time.monotonic() - self.started >= duration:
            conn.fault_note(
                f"still sending after {duration}s: the server read {conn.bytes_out} B "
                "from a client that reads nothing"
            )
            conn.exchange_done()
            return
        if conn.bytes_out == self.last_out:
            conn.fault_note(
                f"stalled after {conn.bytes_out} B: the server stopped reading (backpressure)"
            )
            conn.exchange_done()
            return
        self.last_out = conn.bytes_out
        self._arm_stall_check()

    def closed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class NeverRead(ClientFault):
    """Streams up to ``size`` bytes and never reads; done when sends stall for ``stall`` s
    (the server pushed back), all was sent, or ``duration`` s passed; then it stays open.

    With echo it streams random bytes; with another exchange it pipelines the connection's
    requests again and again (whole requests, about ``size`` bytes of them)."""

    name = "never_read"
    session_class = _NeverReadSession
    quick: ClassVar[Mapping[str, Any]] = {"size": 8 * 1024 * 1024}

    size: int = param(64 * 1024 * 1024, integer(1))
    _: KW_ONLY
    # A stall check every 0 s would spin the loop: the shortest check is 1 ms.
    stall: float = param(0.25, seconds(minimum=0.001))
    duration: float | None = param(None, optional(seconds()))
    rcvbuf: int | None = param(8192, optional(integer(1)))


# --- connections that stay -----------------------------------------------------------------


class _NeverCloseSession(FaultSession):
    lingers = True


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class NeverClose(ClientFault):
    """Finishes its exchange, then keeps the connection open and silent until the client
    is closed (the fixture closes it at teardown)."""

    name = "never_close"
    session_class = _NeverCloseSession


class _SilentSession(FaultSession):
    lingers = True

    def payload(self, data: bytes | None) -> bytes | None:
        return None


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class Silent(ClientFault):
    """Connects and sends nothing: the idle-connection attack.

    It stays open until the server closes it or the client is closed.
    """

    name = "silent"
    session_class = _SilentSession


class _HalfCloseSession(FaultSession):
    wants_eof = True

    def payload_written(self) -> None:
        # write_eof() waits for pending (or held) output to flush, then shuts down.  Over TLS
        # (half_close_safe False) it waits for every reply: see tls/stream.py's essay.
        if self.conn.half_close_safe or self.conn.replies_complete:
            self.conn.write_eof()

    def received(self, data: bytes) -> None:
        conn = self.conn
        if not conn.half_close_safe and conn.replies_complete:
            conn.write_eof()


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class HalfClose(ClientFault):
    """``shutdown(SHUT_WR)`` after sending, then expects every reply (the full echo) and then
    EOF: the server answers what it has, then closes.  With a parsed exchange (HTTP...) the
    exchange's reader judges the replies at EOF.

    Replies the server drops at our EOF, or a server that never closes, fail the connection.
    """

    name = "half_close"
    session_class = _HalfCloseSession


# --- resets --------------------------------------------------------------------------------

RESET_POINTS = ("before", "mid", "after")


class _ResetSession(FaultSession):
    fault: ClientReset

    def __init__(self, fault: ClientFault, conn: ClientConnectionAPI, rng: random.Random) -> None:
        super().__init__(fault, conn, rng)
        at = self.fault.at
        self.at = self.rng.choice(RESET_POINTS) if at == "random" else at

    def connected(self) -> None:
        if self.at == "before":
            self.conn.deliberate_reset("RST before sending")
        elif self.at == "after":
            self.conn.pause_reading()  # "after sending and before reading": read nothing

    def payload(self, data: bytes | None) -> bytes | None:
        if self.at == "mid" and data:
            if len(data) == 1:
                return data
            cut = self.rng.randint(1, len(data) - 1)
            self.conn.fault_note(f"RST after {cut} of {len(data)} B")
            return data[:cut]
        return data

    def all_sent(self) -> None:
        what = "mid-message" if self.at == "mid" else "after sending, before reading"
        self.conn.deliberate_reset(f"RST {what}")


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class ClientReset(ClientFault):
    """The *client* aborts its own connection with an RST (``SO_LINGER`` 0) ``at`` "before"
    sending, "mid" message (a seeded cut), "after" sending and before reading, or a "random"
    one of those.  (A server or the proxy resetting after n bytes is
    ``LimitData(bytes=n, reset=True)``, after a time ``ResetPeer``.)"""

    name = "reset"
    session_class = _ResetSession

    at: str = param("mid", choice(*RESET_POINTS, "random"))


# --- payloads ------------------------------------------------------------------------------


class _GarbageSession(FaultSession):
    fault: Garbage
    sends_garbage = True

    def payload(self, data: bytes | None) -> bytes | None:
        answers = self.conn.exchange.garbage_answers() or frozenset()
        if "echo" in answers:
            return self.rng.randbytes(self.fault.size)
        return garbage_bytes(self.rng, self.fault.size)


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class Garbage(ClientFault):
    """Replaces the requests with ``size`` random binary bytes (every byte value, NULs and
    newlines included).

    Where the exchange's server echoes garbage (Echo) it expects them echoed exactly;
    otherwise the first thing the server does is judged by the exchange's
    ``garbage_answers()`` (close, an error reply, or nothing for ``quiet`` s; see
    :mod:`pytest_multiconn.exchanges.garbage`).  An exchange that does not say is refused.
    """

    name = "garbage"
    session_class = _GarbageSession
    quick: ClassVar[Mapping[str, Any]] = {"size": 16 * 1024}

    size: int = param(64 * 1024, integer(1))
    _: KW_ONLY
    #: Seconds of silence that count as the answer "nothing" (where the exchange allows it).
    quiet: float = param(QUIET, seconds(minimum=0.001))


# --- connection-level faults ---------------------------------------------------------------


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class Burst(ClientFault):
    """Opens ``connections`` connections at once (pick more than the server's listen
    backlog): each still does its full exchange."""

    name = "burst"
    quick: ClassVar[Mapping[str, Any]] = {"connections": 64}

    connections: int = param(1024, integer(1))

    def connection_count(self, requested: int) -> int:
        return max(requested, self.connections)


class _ConnectCloseSession(FaultSession):
    def connected(self) -> None:
        self.conn.deliberate_close("closed right after connecting")


@CLIENT_FAULTS.register
@dataclass(frozen=True, repr=False)
class ConnectClose(ClientFault):
    """Connects, then closes at once (a FIN before any data).

    The server must shrug it off and keep serving everyone else.
    """

    name = "connect_close"
    session_class = _ConnectCloseSession


# --- the catalogue -------------------------------------------------------------------------


def catalogue() -> list[ClientFault]:
    """One instance of every registered client fault with parameters that suit a quick pytest
    run (each class's ``quick``), in registration order.

    Used by the ``multiconn_fault`` fixture (ids are the ``name`` values).
    """
    return CLIENT_FAULTS.catalogue()


def describe(faults: Sequence[ClientFault]) -> str:
    return " + ".join(repr(f) for f in faults) if faults else "no faults"


def check_faults(faults: Iterable[object]) -> list[ClientFault]:
    out = []
    for fault in faults:
        if not isinstance(fault, ClientFault):
            raise TypeError(
                "faults must be ClientFault objects such as PartialSend(max_chunk=1), "
                f"got {fault!r}"
            )
        out.append(fault)
    return out
