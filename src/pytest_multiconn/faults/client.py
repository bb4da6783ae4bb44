"""Client-side faults: small, named, composable misbehaviours of client connections.

A fault is configuration (its parameters); for each connection it applies to, it makes a
:class:`FaultSession` holding that connection's state and hooks.  Faults act only through the
connection's transport methods and knobs (``max_send``, ``read_size``, ``hold_output``,
``pause_reading``, ``write_eof``, ``reset``...), so they work unchanged on any
:class:`~pytest_multiconn.Connection` subclass, TLS included.

Every random choice (chunk sizes, pauses, where a reset lands, which connection gets a fault,
garbage bytes) comes from a ``random.Random`` that the client seeds from its seed, the
connection number and the fault's position, so one seed replays the same schedule.

Usage::

    MultiConnClient(address, 10, faults=[PartialSend(max_chunk=1), HalfClose()]).run()
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pytest_multiconn.core.seed import current_test_id

if TYPE_CHECKING:
    from pytest_multiconn.client.multiconn import ClientConnection
    from pytest_multiconn.core.loop import Timer

#: Send-size records kept per connection (enough to compare schedules, bounded for big runs).
MAX_RECORDED_SENDS = 4096

#: Node ids of pytest tests that ran faulty connections (their failure reports show the seed).
FAULTY_TESTS: set[str] = set()

#: Block size a streaming fault (NeverRead) writes at a time.
STREAM_BLOCK = 64 * 1024


class FaultSession:
    """One fault acting on one connection; every hook is a no-op unless overridden.

    The driver calls hooks in the order the faults were given, so faults compose.
    """

    #: Keep the connection open after its exchange (until the client is closed).
    lingers = False
    #: Whether this connection reads the echo (False: completion comes from the fault).
    reads = True
    #: Complete the exchange only after the server's EOF follows the full echo.
    wants_eof = False

    def __init__(self, fault: ClientFault, conn: ClientConnection, rng: random.Random) -> None:
        self.fault = fault
        self.conn = conn
        self.rng = rng

    def prepare(self) -> None:
        """Before connect: set socket options."""

    def connected(self) -> None:
        """The connection is up; nothing was sent yet."""

    def payload(self, data: bytes | None) -> bytes | None:
        """What to send (``None``: send nothing); gets the previous fault's choice."""
        return data

    def start_sending(self, data: bytes) -> bool:
        """Return True to take over writing ``data`` (the driver then writes nothing)."""
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


class ClientFault:
    """Base of client faults: a name, parameters, and a session per affected connection.

    ``probability`` is the chance (drawn from the client's seeded rng) that a connection gets it.
    """

    #: The fault's name; also its pytest parameter id in ``multiconn_fault``.
    name: ClassVar[str] = "fault"
    session_class: ClassVar[type[FaultSession]] = FaultSession

    def __init__(self, *, probability: float = 1.0) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be between 0 and 1, got {probability!r}")
        self.probability = probability

    def params(self) -> dict[str, Any]:
        """The parameters shown by ``repr`` (subclasses add theirs)."""
        return {} if self.probability == 1.0 else {"probability": self.probability}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- client level -----------------------------------------------------------------------
    def connections(self, requested: int) -> int:
        """How many connections the client opens (Burst raises it)."""
        return requested

    def applies_to(self, rng: random.Random) -> bool:
        """Whether a connection gets this fault (one seeded draw when probability < 1)."""
        return self.probability >= 1.0 or rng.random() < self.probability

    def session(self, conn: ClientConnection, rng: random.Random) -> FaultSession:
        return self.session_class(self, conn, rng)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


# --- PartialSend ----------------------------------------------------------------------------


class _PartialSendSession(FaultSession):
    fault: PartialSend

    def __init__(self, fault: ClientFault, conn: ClientConnection, rng: random.Random) -> None:
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


class PartialSend(ClientFault):
    """Writes in chunks of 1..max_chunk bytes, pausing up to ``delay`` s after each chunk.

    ``sndbuf`` shrinks ``SO_SNDBUF`` so the kernel itself returns short writes and EAGAIN.
    """

    name = "partial_send"
    session_class = _PartialSendSession

    def __init__(
        self,
        max_chunk: int = 1,
        delay: float = 0.0,
        *,
        sndbuf: int | None = None,
        probability: float = 1.0,
    ) -> None:
        super().__init__(probability=probability)
        self.max_chunk = _positive_int("max_chunk", max_chunk)
        self.delay = _non_negative("delay", delay)
        self.sndbuf = None if sndbuf is None else _positive_int("sndbuf", sndbuf)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_chunk": self.max_chunk}
        if self.delay:
            out["delay"] = self.delay
        if self.sndbuf is not None:
            out["sndbuf"] = self.sndbuf
        return out | super().params()


# --- readers --------------------------------------------------------------------------------


class _SlowReaderSession(FaultSession):
    fault: SlowReader

    def __init__(self, fault: ClientFault, conn: ClientConnection, rng: random.Random) -> None:
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


class SlowReader(ClientFault):
    """Reads the echo at ``bytes_per_second`` at most (after ``delay`` s of not reading) with a
    small receive buffer, so the server's send buffer fills and its backpressure is exercised."""

    name = "slow_reader"
    session_class = _SlowReaderSession

    def __init__(
        self,
        bytes_per_second: int = 64 * 1024,
        *,
        delay: float = 0.0,
        rcvbuf: int | None = 8192,
        probability: float = 1.0,
    ) -> None:
        super().__init__(probability=probability)
        self.bytes_per_second = _positive_int("bytes_per_second", bytes_per_second)
        self.delay = _non_negative("delay", delay)
        self.rcvbuf = None if rcvbuf is None else _positive_int("rcvbuf", rcvbuf)

    def params(self) -> dict[str, Any]:
        extra = {"delay": self.delay} if self.delay else {}
        return {"bytes_per_second": self.bytes_per_second} | extra | super().params()


class _NeverReadSession(FaultSession):
    fault: NeverRead
    reads = False
    lingers = True

    def __init__(self, fault: ClientFault, conn: ClientConnection, rng: random.Random) -> None:
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
        self.block = self.rng.randbytes(min(STREAM_BLOCK, self.fault.size))
        self.conn.fault_note(f"streaming {self.fault.size} B without reading")
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


class NeverRead(ClientFault):
    """Streams up to ``size`` bytes and never reads; done when sends stall for ``stall`` s
    (the server pushed back), all was sent, or ``duration`` s passed; then it stays open."""

    name = "never_read"
    session_class = _NeverReadSession

    def __init__(
        self,
        size: int = 64 * 1024 * 1024,
        *,
        stall: float = 0.25,
        duration: float | None = None,
        rcvbuf: int | None = 8192,
        probability: float = 1.0,
    ) -> None:
        super().__init__(probability=probability)
        self.size = _positive_int("size", size)
        self.duration = None if duration is None else _non_negative("duration", duration)
        self.stall = _non_negative("stall", stall) or 0.25
        self.rcvbuf = None if rcvbuf is None else _positive_int("rcvbuf", rcvbuf)

    def params(self) -> dict[str, Any]:
        return {"size": self.size} | super().params()


# --- connections that stay -----------------------------------------------------------------


class _NeverCloseSession(FaultSession):
    lingers = True


class NeverClose(ClientFault):
    """Finishes its exchange, then keeps the connection open and silent until the client
    is closed (the fixture closes it at teardown)."""

    name = "never_close"
    session_class = _NeverCloseSession


class _SilentSession(FaultSession):
    lingers = True

    def payload(self, data: bytes | None) -> bytes | None:
        return None


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
        # (half_close_safe False) it waits for the full echo: see tls/stream.py's essay.
        if self.conn.half_close_safe or not self.conn.expected:
            self.conn.write_eof()

    def received(self, data: bytes) -> None:
        conn = self.conn
        if not conn.half_close_safe and conn.received >= len(conn.expected):
            conn.write_eof()


class HalfClose(ClientFault):
    """``shutdown(SHUT_WR)`` after sending, then expects the full echo and then EOF.

    Bytes the server drops at our EOF, or a server that never closes, fail the connection.
    """

    name = "half_close"
    session_class = _HalfCloseSession


# --- resets --------------------------------------------------------------------------------

RESET_POINTS = ("before", "mid", "after")


class _ResetSession(FaultSession):
    fault: Reset

    def __init__(self, fault: ClientFault, conn: ClientConnection, rng: random.Random) -> None:
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


class Reset(ClientFault):
    """Aborts with an RST (``SO_LINGER`` 0) ``at`` "before" sending, "mid" message (a
    seeded cut), "after" sending and before reading, or at a "random" one of those."""

    name = "reset"
    session_class = _ResetSession

    def __init__(self, at: str = "mid", *, probability: float = 1.0) -> None:
        super().__init__(probability=probability)
        if at not in (*RESET_POINTS, "random"):
            choices = (*RESET_POINTS, "random")
            raise ValueError(f"Reset(at=...) must be one of {choices}, got {at!r}")
        self.at = at

    def params(self) -> dict[str, Any]:
        return {"at": self.at} | super().params()


# --- payloads ------------------------------------------------------------------------------


class _GarbageSession(FaultSession):
    fault: Garbage

    def payload(self, data: bytes | None) -> bytes | None:
        return self.rng.randbytes(self.fault.size)


class Garbage(ClientFault):
    """Replaces the messages with ``size`` random binary bytes (every byte value, NULs and
    newlines included), expecting them echoed exactly."""

    name = "garbage"
    session_class = _GarbageSession

    def __init__(self, size: int = 64 * 1024, *, probability: float = 1.0) -> None:
        super().__init__(probability=probability)
        self.size = _positive_int("size", size)

    def params(self) -> dict[str, Any]:
        return {"size": self.size} | super().params()


# --- connection-level faults ---------------------------------------------------------------


class Burst(ClientFault):
    """Opens ``connections`` connections at once (pick more than the server's listen
    backlog): each still does its full exchange."""

    name = "burst"

    def __init__(self, connections: int = 1024, *, probability: float = 1.0) -> None:
        super().__init__(probability=probability)
        self.count = _positive_int("connections", connections)

    def connections(self, requested: int) -> int:
        return max(requested, self.count)

    def params(self) -> dict[str, Any]:
        return {"connections": self.count} | super().params()


class _ConnectCloseSession(FaultSession):
    def connected(self) -> None:
        self.conn.deliberate_close("closed right after connecting")


class ConnectClose(ClientFault):
    """Connects, then closes at once (a FIN before any data).

    The server must shrug it off and keep serving everyone else.
    """

    name = "connect_close"
    session_class = _ConnectCloseSession


# --- the catalogue -------------------------------------------------------------------------


def catalogue() -> list[ClientFault]:
    """One instance of every client fault with parameters that suit a quick pytest run.

    Used by the ``multiconn_fault`` fixture (ids are the ``name`` values).
    """
    return [
        PartialSend(max_chunk=7, delay=0.002),
        SlowReader(bytes_per_second=256 * 1024),
        NeverRead(size=8 * 1024 * 1024),
        NeverClose(),
        Silent(),
        HalfClose(),
        Reset("mid"),
        Garbage(16 * 1024),
        Burst(64),
        ConnectClose(),
    ]


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


def _is_closed(conn: ClientConnection) -> bool:
    return conn.closed


# --- the per-connection driver --------------------------------------------------------------


class FaultDriver:
    """Runs the fault sessions of one client connection and decides when its exchange is done.

    The connection calls :meth:`after_send` from its ``Connection.after_send`` hook, which
    runs for plaintext above any layer, so the faults see the same sends in plaintext and over
    TLS; connections without faults pay nothing.
    """

    def __init__(self, conn: ClientConnection, sessions: list[FaultSession]) -> None:
        self.conn = conn
        self.sessions = sessions
        self.lingers = any(s.lingers for s in sessions)
        self.reads = all(s.reads for s in sessions)
        self.wants_eof = any(s.wants_eof for s in sessions)
        self.written = False
        self.all_sent_fired = False
        self.send_sizes: list[int] = []
        self.deliberate = ""
        self.peer_closed = False
        self._check_queued = False
        test = current_test_id()
        if test is not None:
            FAULTY_TESTS.add(test)

    def __repr__(self) -> str:
        return f"<FaultDriver {self.conn.label} {describe([s.fault for s in self.sessions])}>"

    @property
    def names(self) -> str:
        return "+".join(s.fault.name for s in self.sessions)

    def prepare(self) -> None:
        for s in self.sessions:
            s.prepare()

    def after_send(self, sent: int) -> None:
        """``sent`` plaintext bytes left in one send (the connection's ``after_send`` hook)."""
        if len(self.send_sizes) < MAX_RECORDED_SENDS:
            self.send_sizes.append(sent)
        for s in self.sessions:
            s.after_send(sent)
        if self.written and not self.all_sent_fired and not self._check_queued:
            # Not from inside the send: the caller still updates the buffer after we return.
            self._check_queued = True
            self.conn.loop.call_soon(self._check_all_sent)

    def _check_all_sent(self) -> None:
        self._check_queued = False
        conn = self.conn
        if self.all_sent_fired or conn.closed or conn.buffered:
            return
        self.all_sent_fired = True
        for s in self.sessions:
            s.all_sent()
            if _is_closed(conn):  # a hook may have closed it (mypy cannot see that)
                return

    def connection_made(self) -> None:
        conn = self.conn
        for s in self.sessions:
            s.connected()
            if conn.closed:
                return
        payload: bytes | None = b"".join(conn.messages)
        for s in self.sessions:
            payload = s.payload(payload)
        conn.expected = payload or b""
        taken = False
        for s in self.sessions:
            if s.start_sending(conn.expected):
                taken = True
                break
            if conn.closed:
                return
        if not taken and payload:
            observer = conn.client.on_event
            if observer is not None:
                observer("send", conn.conn_id, payload)
            conn.write(payload)
        for s in self.sessions:
            s.payload_written()
        self.written = True
        if not conn.closed and not conn.buffered:
            conn.loop.call_soon(self._check_all_sent)
        if not taken and not conn.expected and not self.wants_eof and not conn.closed:
            self.exchange_done()

    def received(self, data: bytes) -> None:
        if self.conn.done:
            # A lingering connection should hear nothing more: note it (a server bug or a push).
            self.conn.fault_note(f"received {len(data)} B after the exchange")
        for s in self.sessions:
            s.received(data)

    def echo_complete(self) -> None:
        """The full echo arrived."""
        if not self.wants_eof:
            self.exchange_done()

    def on_eof(self) -> None:
        conn = self.conn
        self.peer_closed = True
        if conn.done:
            conn.fault_note("closed by the server while lingering")
            conn.close(reason="closed by server")
            return
        if self.wants_eof and conn.received == len(conn.expected):
            conn.close(reason="full echo, then EOF")
            return
        if self.wants_eof:
            lost = len(conn.expected) - conn.received
            conn.failure = (
                f"bytes lost on half-close: the server closed after echoing {conn.received} of "
                f"{len(conn.expected)} bytes ({lost} lost)"
            )
        elif not self.reads:
            conn.failure = f"server closed the connection after receiving {conn.bytes_out} B"
        else:
            conn.failure = (
                f"server closed the connection after echoing {conn.received} of "
                f"{len(conn.expected)} bytes"
            )
        conn.close(reason="eof before the exchange ended")

    def exchange_done(self) -> None:
        conn = self.conn
        if conn.done:
            return
        if self.lingers:
            conn.linger()
        else:
            conn._complete()

    def end(self, note: str, *, reset: bool) -> None:
        self.deliberate = note
        self.conn.fault_note(note)
        if reset:
            self.conn.reset()
        else:
            self.conn.close(reason=note)

    def writing_paused(self) -> None:
        for s in self.sessions:
            s.writing_paused()

    def writing_resumed(self) -> None:
        for s in self.sessions:
            s.writing_resumed()

    def closed(self) -> None:
        for s in self.sessions:
            s.closed()

    def matched(self) -> bool:
        conn = self.conn
        if conn.mismatch_at is not None:
            return False
        if self.deliberate or not self.reads:
            return True
        return conn.received == len(conn.expected)
